fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes vendored, as for flotilla-proto: no system protoc needed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the env here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    tonic_prost_build::configure().build_server(false).compile_protos(&[proto.join("etcd_kv.proto")], std::slice::from_ref(&proto))?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
