// SwiftPM needs at least one C source file in a C target; the symbols come from the Rust library.
