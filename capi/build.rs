//! Gives libmos.so its soname: programs link against `libmos.so.0`, the major version of the
//! C ABI (the header's LIBMOS_VERSION_MAJOR). Cargo writes only `libmos.so`, so the build also
//! leaves the link `libmos.so.0 -> libmos.so` beside it: a program linked against the build
//! tree (with an rpath there, or LD_LIBRARY_PATH) then finds its library.
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmos.so.0");
    println!("cargo:rerun-if-changed=build.rs");
    // OUT_DIR is <target>/<profile>/build/mos-capi-<hash>/out.
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join("libmos.so.0");
    if std::fs::symlink_metadata(&link).is_err() {
        // Not fatal: without the link, programs find the library through a link of their own.
        if let Err(e) = std::os::unix::fs::symlink("libmos.so", &link) {
            println!("cargo:warning=could not make {}: {e}", link.display());
        }
    }
}
