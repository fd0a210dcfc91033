//! Gives libmos.so its soname: programs link against `libmos.so.0`, the major version of the
//! C ABI (the header's LIBMOS_VERSION_MAJOR).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmos.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
