fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes vendored so that a bare machine needs no system protoc.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the env here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Read when the script runs, not when it is compiled: a build script
    // compiled for one checkout may be reused by another sharing the target
    // directory.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [root.join("flotilla/v1/raft.proto"), root.join("flotilla/v1/api.proto"), root.join("flotilla/v1/node.proto")];
    tonic_prost_build::configure().compile_protos(&files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
