//! `uniffi-bindgen`: generates the Swift, Kotlin and Python bindings from the built
//! `unibus_ffi` library, with the settings in `ffi/uniffi.toml`. The language builds run it:
//! Maven (generate-sources), maturin (the wheel) and `bindings/swift/generate.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
