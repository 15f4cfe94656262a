/*
 * Proves the generated Swift C header is valid C and matches the Rust library: it compiles
 * against UnibusFFI.h, links against libunibus_ffi, and calls through it.
 * Built and run by bindings/swift/check/run.sh (gcc; `_Nonnull`/`_Nullable` are clang-only).
 */
#include <stdio.h>
#include <string.h>

#include "UnibusFFI.h"

static RustBuffer string_buffer(const char *text) {
    RustCallStatus status = {0};
    ForeignBytes bytes = {(int32_t)strlen(text), (const uint8_t *)text};
    return ffi_unibus_ffi_rustbuffer_from_bytes(bytes, &status);
}

int main(void) {
    uint32_t contract = ffi_unibus_ffi_uniffi_contract_version();
    if (contract == 0) {
        fprintf(stderr, "contract version is 0\n");
        return 1;
    }

    /* A valid key in upper case comes back normalized to lower case. */
    const char *upper = "D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A";
    const char *lower = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    RustCallStatus status = {0};
    RustBuffer out = uniffi_unibus_ffi_fn_func_validate_sign_public_key(string_buffer(upper), &status);
    if (status.code != 0 || out.len != 64 || memcmp(out.data, lower, 64) != 0) {
        fprintf(stderr, "validate_sign_public_key: code %d, len %llu\n", status.code,
                (unsigned long long)out.len);
        return 1;
    }
    ffi_unibus_ffi_rustbuffer_free(out, &status);

    /* An all-zero key is a typed error (call status 1 = error, with the error in errorBuf). */
    RustCallStatus error_status = {0};
    uniffi_unibus_ffi_fn_func_validate_sign_public_key(
        string_buffer("0000000000000000000000000000000000000000000000000000000000000000"),
        &error_status);
    if (error_status.code != 1 || error_status.errorBuf.len == 0) {
        fprintf(stderr, "all-zero key: expected error status 1, got %d\n", error_status.code);
        return 1;
    }
    ffi_unibus_ffi_rustbuffer_free(error_status.errorBuf, &status);

    printf("swift header check: contract version %u, validate_sign_public_key ok, typed error ok\n",
           contract);
    return 0;
}
