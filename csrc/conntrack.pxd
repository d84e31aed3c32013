# Declarations of the parts of libnetfilter_conntrack that fwsg's conntrack sweep calls.

from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "libnetfilter_conntrack/libnetfilter_conntrack.h" nogil:
    struct nfct_handle:
        pass

    struct nf_conntrack:
        pass

    enum nf_conntrack_msg_type:
        NFCT_T_UNKNOWN

    enum:
        CONNTRACK
        NFCT_T_ALL
        NFCT_CB_CONTINUE
        NFCT_Q_DUMP
        NFCT_Q_DESTROY

    enum nf_conntrack_attr:
        ATTR_ORIG_IPV4_SRC
        ATTR_ORIG_IPV4_DST
        ATTR_ORIG_IPV6_SRC
        ATTR_ORIG_IPV6_DST
        ATTR_ORIG_PORT_SRC
        ATTR_ORIG_PORT_DST
        ATTR_ICMP_TYPE
        ATTR_ICMP_CODE
        ATTR_ICMP_ID
        ATTR_ORIG_L3PROTO
        ATTR_ORIG_L4PROTO
        ATTR_ZONE
        ATTR_TIMEOUT
        ATTR_TCP_STATE

    ctypedef int (*nfct_cb)(nf_conntrack_msg_type type, nf_conntrack *ct, void *data)

    nfct_handle *nfct_open(uint8_t subsys_id, unsigned subscriptions)
    int nfct_close(nfct_handle *cth)
    int nfct_callback_register(nfct_handle *h, int type, nfct_cb cb, void *data)
    int nfct_query(nfct_handle *h, int query, const void *data)
    nf_conntrack *nfct_new()
    void nfct_destroy(nf_conntrack *ct)
    int nfct_attr_is_set(const nf_conntrack *ct, int type)
    const void *nfct_get_attr(const nf_conntrack *ct, int type)
    uint8_t nfct_get_attr_u8(const nf_conntrack *ct, int type)
    uint16_t nfct_get_attr_u16(const nf_conntrack *ct, int type)
    uint32_t nfct_get_attr_u32(const nf_conntrack *ct, int type)
    void nfct_set_attr(nf_conntrack *ct, int type, const void *value)
    void nfct_set_attr_u8(nf_conntrack *ct, int type, uint8_t value)
    void nfct_set_attr_u16(nf_conntrack *ct, int type, uint16_t value)
    void nfct_set_attr_u32(nf_conntrack *ct, int type, uint32_t value)

    int nfct_nlmsg_build(void *nlh, const nf_conntrack *ct)
    int nfct_setobjopt(nf_conntrack *ct, unsigned int option)

    enum:
        NFCT_SOPT_SETUP_REPLY


cdef extern from "libmnl/libmnl.h" nogil:
    void *mnl_nlmsg_put_header(void *buf)
    void *mnl_nlmsg_put_extra_header(void *nlh, size_t size)


cdef extern from "linux/netfilter/nfnetlink.h" nogil:
    struct nfgenmsg:
        uint8_t nfgen_family
        uint8_t version
        uint16_t res_id

    enum:
        NFNETLINK_V0
        NFNL_SUBSYS_CTNETLINK


cdef extern from "linux/netfilter/nfnetlink_conntrack.h" nogil:
    enum:
        IPCTNL_MSG_CT_DELETE
        IPCTNL_MSG_CT_NEW
