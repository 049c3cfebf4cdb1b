//! Link settings of the `appliance` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=packaging/symbol-order.txt");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if arch != "x86_64" || os != "linux" || env != "gnu" {
        return;
    }
    // Packed relative relocations (DT_RELR): the position-independent binary's ~1 MB of
    // `.rela.dyn`, which the dynamic loader reads (and so keeps resident) at every start, becomes
    // ~15 KB. Needs glibc >= 2.36 (Debian 12) at run time and binutils >= 2.38 to link; for
    // aarch64 and arm, GNU ld has it from 2.41 (Debian 13), so those builds leave it out for now.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // Code layout: the functions that start-up and requests run, placed together at the front of
    // `.text` in the order of packaging/symbol-order.txt (written by benches/code_order.py from a
    // training run). The kernel maps code 64 KiB around each page the process touches; spread
    // over the whole 24 MB the way the compiler leaves them, they kept ~20 MiB of code resident,
    // placed together ~7 MiB. Only lld reads the list, and rustc links with its own lld on this
    // target from 1.90 unless told otherwise; names the binary does not have (another toolchain,
    // changed dependencies) are skipped in silence, leaving the compiler's order.
    if std::env::var("PROFILE").as_deref() == Ok("release") && links_with_rust_lld() {
        let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging")
            .join("symbol-order.txt");
        if order.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Whether rustc links with its own lld: its default for x86_64-unknown-linux-gnu from 1.90,
/// unless the flags or cargo's configuration (`RUSTC_LINKER`) choose another linker.
fn links_with_rust_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let chooses_linker = ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|option| flags.contains(option));
    if chooses_linker || std::env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = std::process::Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let mut numbers = version.split_whitespace().nth(1).unwrap_or("").split('.');
    let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 90)
}
