# Declarations of the libnftnl expression attributes and nf_tables constants for the matches
# fwsg's rules use (meta, cmp, payload, bitwise, lookup, ct; immediate is in netlink.pxd).

from libc.stdint cimport uint16_t, uint32_t
from netlink cimport nftnl_expr

cdef extern from "libnftnl/expr.h" nogil:
    enum:
        NFTNL_EXPR_PAYLOAD_DREG
        NFTNL_EXPR_PAYLOAD_BASE
        NFTNL_EXPR_PAYLOAD_OFFSET
        NFTNL_EXPR_PAYLOAD_LEN
        NFTNL_EXPR_META_KEY
        NFTNL_EXPR_META_DREG
        NFTNL_EXPR_CMP_SREG
        NFTNL_EXPR_CMP_OP
        NFTNL_EXPR_CMP_DATA
        NFTNL_EXPR_BITWISE_SREG
        NFTNL_EXPR_BITWISE_DREG
        NFTNL_EXPR_BITWISE_LEN
        NFTNL_EXPR_BITWISE_MASK
        NFTNL_EXPR_BITWISE_XOR
        NFTNL_EXPR_LOOKUP_SREG
        NFTNL_EXPR_LOOKUP_SET
        NFTNL_EXPR_LOOKUP_DREG
        NFTNL_EXPR_LOOKUP_SET_ID
        NFTNL_EXPR_LOOKUP_FLAGS
        NFTNL_EXPR_META_SREG
        NFTNL_EXPR_CT_KEY
        NFTNL_EXPR_CT_DREG
        NFTNL_EXPR_CT_SREG
        NFTNL_EXPR_IMM_DATA


cdef extern from "linux/netfilter/nf_tables.h" nogil:
    enum:
        NFT_REG_1
        NFT_RETURN


cdef extern from "libnftnl/expr.h" nogil:
    int nftnl_expr_set(nftnl_expr *expr, uint16_t type, const void *data, uint32_t data_len)
    void nftnl_expr_free(const nftnl_expr *expr)
