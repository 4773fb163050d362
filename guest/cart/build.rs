//! A small stack for the component: the rules need little, and every page of linear memory a
//! fresh instance touches is a page the host resets after it (see the host's pooling setup).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
    }
}
