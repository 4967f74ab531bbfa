//! Compiles the gRPC protocol with the vendored `protoc`, so a fresh machine needs no system one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = [
        "proto/creditgate/v1/gate.proto",
        "proto/creditgate/v1/admin.proto",
    ];
    // The descriptors are served by gRPC reflection.
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("creditgate.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
