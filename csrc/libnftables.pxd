# Declarations of the parts of libnftables (nftables/libnftables.h) that fwsg calls.

cdef extern from "nftables/libnftables.h" nogil:
    cdef struct nft_ctx:
        pass

    enum:
        NFT_CTX_DEFAULT
        NFT_CTX_OUTPUT_HANDLE
        NFT_CTX_OUTPUT_JSON
        NFT_CTX_OUTPUT_ECHO

    nft_ctx *nft_ctx_new(unsigned int flags)
    void nft_ctx_free(nft_ctx *ctx)
    unsigned int nft_ctx_output_get_flags(nft_ctx *ctx)
    void nft_ctx_output_set_flags(nft_ctx *ctx, unsigned int flags)
    int nft_ctx_buffer_output(nft_ctx *ctx)
    int nft_ctx_unbuffer_output(nft_ctx *ctx)
    const char *nft_ctx_get_output_buffer(nft_ctx *ctx)
    int nft_ctx_buffer_error(nft_ctx *ctx)
    int nft_ctx_unbuffer_error(nft_ctx *ctx)
    const char *nft_ctx_get_error_buffer(nft_ctx *ctx)
    int nft_run_cmd_from_buffer(nft_ctx *nft, const char *buf)
