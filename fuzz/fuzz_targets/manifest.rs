//! `kiln.toml` text through `Manifest::parse` (TOML decoding and validation). An accepted
//! manifest must survive a serialize/parse round trip unchanged, and what the worker derives
//! from it (the batching policy, the protocol shapes, the datatypes) must not panic.
#![no_main]

use kiln_model::Manifest;
use kiln_worker::batch::Policy;
use kiln_worker::tensors::protocol_shape;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = match Manifest::parse(text) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for spec in m.inputs.iter().chain(&m.outputs) {
        let _ = spec.dtype();
        let shape = protocol_shape(spec, m.max_batch_size);
        assert_eq!(
            shape.len(),
            spec.dims.len() + usize::from(m.max_batch_size > 0)
        );
    }
    let _ = Policy::from_manifest(&m);
    let again = toml::to_string(&m).expect("an accepted manifest serializes");
    let back = Manifest::parse(&again)
        .unwrap_or_else(|e| panic!("a serialized manifest does not parse: {e}\n{again}"));
    assert_eq!(back, m, "round trip through\n{again}");
});
