//! Link settings of the `appliance` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // Packed relative relocations (DT_RELR): the position-independent binary's ~1 MB of
    // `.rela.dyn`, which the dynamic loader reads (and so keeps resident) at every start, becomes
    // ~15 KB. Needs glibc >= 2.36 (Debian 12) at run time and binutils >= 2.38 to link; for
    // aarch64 and arm, GNU ld has it from 2.41 (Debian 13), so those builds leave it out for now.
    if arch == "x86_64" && os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
