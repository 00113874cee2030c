//! Backend check: runs every model package of a repository on a backend and on a baseline
//! backend, reports how far apart their outputs are, and tabulates throughput by batch size.
//!
//! This is the GPU check of `deploy/gpu/check.sh` (with `--features wgpu` and `--backend wgpu`
//! on an NVIDIA machine), and runs as well on a software adapter (`--backend wgpu-cpu`) or on
//! the CPU backends:
//!
//! ```text
//! cargo run --release -p kiln-model --features wgpu --example backend_check -- \
//!     --backend wgpu --baseline flex --models models --batches 1,8,64,256,1024 --seconds 1
//! ```
//!
//! Parity: each package gets deterministic pseudo-random inputs (batch 8; FP32 in [-2, 2],
//! integers 0) and the two backends' outputs are compared element by element (floats: max
//! absolute difference; integers and strings: count of mismatches). The check exits non-zero if a
//! float output differs by more than `--tolerance` (default 1e-4) or a label differs.
//! Throughput: for each batch size, the model runs repeatedly for `--seconds` after two warm-up
//! runs; rows/s and mean milliseconds per batch are printed as a Markdown table, the same run
//! giving both backends' numbers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kiln_model::{Backend, HostData, HostTensor, Manifest, Model};

struct Args {
    backend: Backend,
    baseline: Backend,
    models: PathBuf,
    batches: Vec<usize>,
    seconds: f64,
    tolerance: f32,
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        backend: Backend::Flex,
        baseline: Backend::Flex,
        models: PathBuf::from("models"),
        batches: vec![1, 8, 64, 256, 1024],
        seconds: 1.0,
        tolerance: 1e-4,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = value()?.parse().map_err(|e| format!("{e}"))?,
            "--baseline" => a.baseline = value()?.parse().map_err(|e| format!("{e}"))?,
            "--models" => a.models = value()?.into(),
            "--batches" => {
                a.batches = value()?
                    .split(',')
                    .map(|b| b.trim().parse().map_err(|_| format!("bad batch {b:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => a.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--tolerance" => a.tolerance = value()?.parse().map_err(|_| "bad --tolerance")?,
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// A small deterministic generator (xorshift), so both backends see the same inputs.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
}

fn inputs(m: &Manifest, batch: usize, seed: u64) -> Vec<(String, HostTensor)> {
    let mut rng = Rng(seed | 1);
    m.inputs
        .iter()
        .map(|spec| {
            let mut shape: Vec<usize> = spec.dims.iter().map(|&d| d.max(1) as usize).collect();
            if m.max_batch_size > 0 {
                shape.insert(0, batch);
            }
            let n: usize = shape.iter().product();
            let data = match spec.datatype.as_str() {
                "FP32" => HostData::F32((0..n).map(|_| rng.next_f32()).collect()),
                "INT64" => HostData::I64(vec![0; n]),
                "INT32" => HostData::I32(vec![0; n]),
                other => HostData::Bytes(vec![other.as_bytes().to_vec(); n]),
            };
            (spec.name.clone(), HostTensor { shape, data })
        })
        .collect()
}

/// Loads a package with its batch limit raised to `max_batch` (so large batches can be timed).
fn load(dir: &Path, backend: Backend, max_batch: usize) -> Result<Model, String> {
    let mut manifest = Manifest::read(dir).map_err(|e| e.to_string())?;
    if manifest.max_batch_size > 0 {
        manifest.max_batch_size = manifest.max_batch_size.max(max_batch as u32);
    }
    let onnx = std::fs::read(dir.join(&manifest.model_file)).map_err(|e| e.to_string())?;
    Model::from_parts(manifest, &onnx, backend).map_err(|e| e.to_string())
}

/// Compares two output sets: (max float diff, mismatched non-float elements).
fn compare(a: &[(String, HostTensor)], b: &[(String, HostTensor)]) -> (f32, usize) {
    let mut max_diff = 0f32;
    let mut mismatches = 0;
    for ((_, x), (_, y)) in a.iter().zip(b) {
        if x.shape != y.shape {
            mismatches += x.len().max(1);
            continue;
        }
        match (&x.data, &y.data) {
            (HostData::F32(p), HostData::F32(q)) => {
                for (u, v) in p.iter().zip(q) {
                    let d = (u - v).abs();
                    max_diff = if d.is_nan() {
                        f32::NAN
                    } else {
                        max_diff.max(d)
                    };
                }
            }
            (p, q) => mismatches += usize::from(p != q),
        }
    }
    (max_diff, mismatches)
}

/// Mean time per run of `model` on `batch` rows, timed for about `seconds`.
fn time(model: &Model, batch: usize, seconds: f64) -> Result<Duration, String> {
    let x = inputs(model.manifest(), batch, 7);
    for _ in 0..2 {
        model.infer(x.clone()).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || start.elapsed().as_secs_f64() < seconds {
        model.infer(x.clone()).map_err(|e| e.to_string())?;
        runs += 1;
    }
    Ok(start.elapsed() / runs)
}

fn check(dir: &Path, a: &Args) -> Result<bool, String> {
    let max_batch = a.batches.iter().copied().max().unwrap_or(1);
    let t = Instant::now();
    let model = load(dir, a.backend, max_batch)?;
    let load_backend = t.elapsed();
    let base = load(dir, a.baseline, max_batch)?;
    let m = model.manifest().clone();
    let x = inputs(&m, 8, 42);
    let t = Instant::now();
    let got = model.infer(x.clone()).map_err(|e| e.to_string())?;
    let first = t.elapsed();
    let want = base.infer(x).map_err(|e| e.to_string())?;
    let (diff, mismatches) = compare(&got, &want);
    let ok = diff <= a.tolerance && mismatches == 0;
    println!(
        "\n### {} version {}\n\nparity {} vs {} (batch 8): max |diff| {diff:e}, label mismatches \
         {mismatches} -> {}; load {:.0} ms, first run {:.0} ms\n",
        m.name,
        m.version,
        a.backend,
        a.baseline,
        if ok { "OK" } else { "FAIL" },
        load_backend.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
    );
    if m.max_batch_size == 0 {
        return Ok(ok);
    }
    println!(
        "| batch | {b} rows/s | {b} ms/batch | {c} rows/s | {c} ms/batch | {b} / {c} |",
        b = a.backend,
        c = a.baseline
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &batch in &a.batches {
        let tb = time(&model, batch, a.seconds)?;
        let tc = time(&base, batch, a.seconds)?;
        let rate = |t: Duration| batch as f64 / t.as_secs_f64();
        println!(
            "| {batch} | {:.0} | {:.3} | {:.0} | {:.3} | {:.2} |",
            rate(tb),
            tb.as_secs_f64() * 1e3,
            rate(tc),
            tc.as_secs_f64() * 1e3,
            rate(tb) / rate(tc)
        );
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backend_check: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "# backend check: {} ({}) against {}",
        args.backend,
        args.backend.device_description(),
        args.baseline
    );
    let mut failed = Vec::new();
    let dirs = match kiln_model::packages(&args.models) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("backend_check: {}: {e}", args.models.display());
            return ExitCode::from(2);
        }
    };
    for dir in dirs {
        let name = dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !args.only.is_empty() && !args.only.contains(&name) {
            continue;
        }
        match check(&dir, &args) {
            Ok(true) => {}
            Ok(false) => failed.push(name),
            Err(e) => {
                println!("\n### {}\n\nerror: {e}", dir.display());
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        println!("\nall packages agree");
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
