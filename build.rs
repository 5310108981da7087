//! Builds the kernel forwarding program (src/media/kernel/forward.bpf.c) with clang for
//! the BPF target. Without clang or the libbpf headers the server still builds: the
//! object is left empty and the server relays every call itself, saying why at start.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/media/kernel/forward.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("forward.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The kernel's UAPI headers include <asm/types.h>, which Debian keeps per architecture.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let built = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(SOURCE)
        .arg("-o")
        .arg(&object)
        .status();
    match built {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!("cargo:warning=kernel forwarding not built: {clang} failed ({s}); install clang and libbpf-dev");
            std::fs::write(&object, b"").expect("write an empty object");
        }
        Err(e) => {
            println!("cargo:warning=kernel forwarding not built: cannot run {clang} ({e}); install clang and libbpf-dev");
            std::fs::write(&object, b"").expect("write an empty object");
        }
    }
}
