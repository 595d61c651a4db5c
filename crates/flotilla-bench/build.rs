fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes vendored, as for flotilla-proto: no system protoc needed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the env here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Read at run time, as in flotilla-proto: the compiled script may serve
    // another checkout.
    let proto = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    tonic_prost_build::configure().build_server(false).compile_protos(&[proto.join("etcd_kv.proto")], std::slice::from_ref(&proto))?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
