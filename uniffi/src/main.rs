//! `uniffi-bindgen`: generates the Swift, Kotlin and Python bindings from the built
//! `unibus_ffi` library. Run it through `scripts/gen-bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
