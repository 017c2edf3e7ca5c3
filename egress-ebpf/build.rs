//! Rebuild the datapath when bpf-linker changes (it is the linker of this
//! crate's bpf target, invisible to cargo otherwise).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
