//! Compiles the gRPC protocol with the vendored `protoc`, so a fresh machine needs no system one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = [
        "proto/creditgate/v1/gate.proto",
        "proto/creditgate/v1/admin.proto",
    ];
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
