//! ONNX bytes through the model runtime's loader (`Model::from_parts`: protobuf decoding,
//! initializer and constant decoding, op parsing, dataflow checks, weight upload to the flex
//! device). Malformed models must be refused with an error: `from_parts` catches a panicking
//! loader, but libFuzzer's panic hook reports the panic first, so a loader panic is a crash here.
#![no_main]

use kiln_model::{Backend, Manifest, Model};
use libfuzzer_sys::fuzz_target;

static MANIFEST: std::sync::LazyLock<Manifest> = std::sync::LazyLock::new(|| {
    Manifest::read(&kiln_fuzz::models_dir().join("digits/1")).expect("digits manifest")
});

fuzz_target!(
    init: {
        std::sync::LazyLock::force(&MANIFEST);
    },
    |data: &[u8]| {
        if let Ok(model) = Model::from_parts(MANIFEST.clone(), data, Backend::Flex) {
            let _ = model.memory_bytes();
        }
    }
);
