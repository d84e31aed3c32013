# Declarations of the parts of libmnl and libnftnl that fwsg's netlink writer calls (tables, sets,
# chains, rules, elements).

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "linux/netlink.h" nogil:
    struct nlmsghdr:
        uint32_t nlmsg_len
        uint16_t nlmsg_type
        uint16_t nlmsg_flags
        uint32_t nlmsg_seq
        uint32_t nlmsg_pid

    struct nlmsgerr:
        int error

    enum:
        NETLINK_NETFILTER
        NLMSG_ERROR
        NLMSG_DONE
        NLM_F_ACK
        NLM_F_CREATE
        NLM_F_APPEND
        NLM_F_REPLACE
        NLM_F_ECHO


cdef extern from "linux/netfilter/nf_tables.h" nogil:
    enum:
        NFT_MSG_NEWTABLE
        NFT_MSG_DELTABLE
        NFT_MSG_NEWSET
        NFT_MSG_DELSET
        NFT_MSG_NEWSETELEM
        NFT_MSG_DELSETELEM
        NFT_MSG_NEWCHAIN
        NFT_MSG_DELCHAIN
        NFT_MSG_NEWRULE
        NFT_MSG_DELRULE
        NFT_JUMP
        NFT_REG_VERDICT


cdef extern from "linux/netfilter.h" nogil:
    enum:
        NF_DROP


cdef extern from "libmnl/libmnl.h" nogil:
    struct mnl_socket:
        pass

    enum:
        MNL_SOCKET_AUTOPID

    mnl_socket *mnl_socket_open(int bus)
    int mnl_socket_bind(mnl_socket *nl, unsigned int groups, int pid)
    unsigned int mnl_socket_get_portid(const mnl_socket *nl)
    int mnl_socket_get_fd(const mnl_socket *nl)
    int mnl_socket_close(mnl_socket *nl)
    ssize_t mnl_socket_sendto(const mnl_socket *nl, const void *req, size_t siz)
    ssize_t mnl_socket_recvfrom(const mnl_socket *nl, void *buf, size_t siz)
    bint mnl_nlmsg_ok(const nlmsghdr *nlh, int len)
    nlmsghdr *mnl_nlmsg_next(const nlmsghdr *nlh, int *len)
    void *mnl_nlmsg_get_payload(const nlmsghdr *nlh)
    void mnl_attr_put_u32(nlmsghdr *nlh, uint16_t type, uint32_t data)


cdef extern from "sys/uio.h" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "libnftnl/batch.h" nogil:
    struct nftnl_batch:
        pass

    nftnl_batch *nftnl_batch_alloc(uint32_t pg_size, uint32_t pg_overrun_size)
    int nftnl_batch_update(nftnl_batch *batch)
    void nftnl_batch_free(nftnl_batch *batch)
    void *nftnl_batch_buffer(nftnl_batch *batch)
    uint32_t nftnl_batch_buffer_len(nftnl_batch *batch)
    int nftnl_batch_iovec_len(nftnl_batch *batch)
    void nftnl_batch_iovec(nftnl_batch *batch, iovec *iov, uint32_t iovlen)


cdef extern from "libnftnl/common.h" nogil:
    nlmsghdr *nftnl_nlmsg_build_hdr(char *buf, uint16_t type, uint16_t family, uint16_t flags,
                                    uint32_t seq)
    nlmsghdr *nftnl_batch_begin(char *buf, uint32_t seq)
    nlmsghdr *nftnl_batch_end(char *buf, uint32_t seq)


cdef extern from "libnftnl/set.h" nogil:
    struct nftnl_set:
        pass

    struct nftnl_set_elem:
        pass

    enum:
        NFTNL_SET_TABLE
        NFTNL_SET_NAME
        NFTNL_SET_FLAGS
        NFTNL_SET_KEY_TYPE
        NFTNL_SET_KEY_LEN
        NFTNL_SET_DATA_TYPE
        NFTNL_SET_DATA_LEN
        NFTNL_SET_ID
        NFTNL_SET_DESC_SIZE
        NFTNL_SET_USERDATA
        NFTNL_SET_DESC_CONCAT
        NFTNL_SET_ELEM_KEY
        NFTNL_SET_ELEM_DATA
        NFTNL_SET_ELEM_VERDICT
        NFTNL_SET_ELEM_CHAIN

    nftnl_set *nftnl_set_alloc()
    void nftnl_set_free(const nftnl_set *s)
    int nftnl_set_set_str(nftnl_set *s, uint16_t attr, const char *str)
    void nftnl_set_set_u32(nftnl_set *s, uint16_t attr, uint32_t val)
    int nftnl_set_set_data(nftnl_set *s, uint16_t attr, const void *data, uint32_t data_len)
    void nftnl_set_nlmsg_build_payload(nlmsghdr *nlh, nftnl_set *s)
    nftnl_set_elem *nftnl_set_elem_alloc()
    int nftnl_set_elem_set(nftnl_set_elem *s, uint16_t attr, const void *data, uint32_t data_len)
    int nftnl_set_elem_set_str(nftnl_set_elem *s, uint16_t attr, const char *str)
    void nftnl_set_elem_add(nftnl_set *s, nftnl_set_elem *elem)
    void nftnl_set_elems_nlmsg_build_payload(nlmsghdr *nlh, nftnl_set *s)


cdef extern from "libnftnl/chain.h" nogil:
    struct nftnl_chain:
        pass

    enum:
        NFTNL_CHAIN_NAME
        NFTNL_CHAIN_TABLE
        NFTNL_CHAIN_HOOKNUM
        NFTNL_CHAIN_PRIO
        NFTNL_CHAIN_POLICY
        NFTNL_CHAIN_TYPE

    nftnl_chain *nftnl_chain_alloc()
    void nftnl_chain_free(const nftnl_chain *c)
    int nftnl_chain_set_str(nftnl_chain *c, uint16_t attr, const char *str)
    void nftnl_chain_set_u32(nftnl_chain *c, uint16_t attr, uint32_t data)
    void nftnl_chain_set_s32(nftnl_chain *c, uint16_t attr, int32_t data)
    void nftnl_chain_nlmsg_build_payload(nlmsghdr *nlh, const nftnl_chain *c)


cdef extern from "libnftnl/expr.h" nogil:
    struct nftnl_expr:
        pass

    enum:
        NFTNL_EXPR_IMM_DREG
        NFTNL_EXPR_IMM_VERDICT
        NFTNL_EXPR_IMM_CHAIN

    nftnl_expr *nftnl_expr_alloc(const char *name)
    void nftnl_expr_set_u32(nftnl_expr *expr, uint16_t type, uint32_t data)
    int nftnl_expr_set_str(nftnl_expr *expr, uint16_t type, const char *str)


cdef extern from "libnftnl/table.h" nogil:
    struct nftnl_table:
        pass

    enum:
        NFTNL_TABLE_NAME
        NFTNL_TABLE_FLAGS

    nftnl_table *nftnl_table_alloc()
    void nftnl_table_free(const nftnl_table *t)
    int nftnl_table_set_str(nftnl_table *t, uint16_t attr, const char *str)
    void nftnl_table_set_u32(nftnl_table *t, uint16_t attr, uint32_t data)
    void nftnl_table_nlmsg_build_payload(nlmsghdr *nlh, const nftnl_table *t)


cdef extern from "libnftnl/rule.h" nogil:
    struct nftnl_rule:
        pass

    enum:
        NFTNL_RULE_TABLE
        NFTNL_RULE_CHAIN
        NFTNL_RULE_USERDATA
        NFTNL_RULE_HANDLE
        NFTNL_RULE_POSITION

    nftnl_rule *nftnl_rule_alloc()
    void nftnl_rule_free(const nftnl_rule *r)
    int nftnl_rule_set_str(nftnl_rule *r, uint16_t attr, const char *str)
    int nftnl_rule_set_data(nftnl_rule *r, uint16_t attr, const void *data, uint32_t data_len)
    void nftnl_rule_set_u64(nftnl_rule *r, uint16_t attr, uint64_t val)
    void nftnl_rule_add_expr(nftnl_rule *r, nftnl_expr *expr)
    void nftnl_rule_nlmsg_build_payload(nlmsghdr *nlh, nftnl_rule *r)


cdef extern from "libnftnl/udata.h" nogil:
    struct nftnl_udata_buf:
        pass

    enum:
        NFTNL_UDATA_RULE_COMMENT

    nftnl_udata_buf *nftnl_udata_buf_alloc(uint32_t data_size)
    void nftnl_udata_buf_free(const nftnl_udata_buf *buf)
    uint32_t nftnl_udata_buf_len(const nftnl_udata_buf *buf)
    void *nftnl_udata_buf_data(const nftnl_udata_buf *buf)
    bint nftnl_udata_put_strz(nftnl_udata_buf *buf, uint8_t type, const char *strz)
