//! The server under test: `K` separate connections, the model's input signature (read from
//! ModelMetadata and ModelConfig), a pool of pre-built requests of random data within that
//! signature, and the [`InferCall`] that sends them.
//!
//! Requests are built before the load starts and cycled, so building them is never measured;
//! cloning one is cheap (tensor bytes are `bytes::Bytes`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::model_infer_request::InferInputTensor;
use kiln_proto::inference::{
    ModelConfigRequest, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
};
use kiln_security::{Bearer, TlsReloader};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::config::TargetConfig;
use crate::data::random_raw;
use crate::drift::Drift;
use crate::inputs::{self, InputData};
use crate::load::{Answer, Call};
use crate::mix::{Mix, WeightedModel};
use crate::validate::{self, ExpectedOutputs};

/// Largest message accepted from the server.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One input tensor as sent: name, datatype and full shape (batch dimension included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPlan {
    /// Input name.
    pub name: String,
    /// v2 datatype (`"FP32"`).
    pub datatype: String,
    /// Shape of the sent tensor.
    pub shape: Vec<i64>,
}

/// What the server said about the model, resolved into the tensors each request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPlan {
    /// `max_batch_size` from ModelConfig (0: the model does not batch).
    pub max_batch_size: i64,
    /// The inputs of every request.
    pub inputs: Vec<InputPlan>,
}

/// A connection to the server under test, sending the `--token` (if any) on every call.
pub type Client = GrpcInferenceServiceClient<InterceptedService<Channel, Bearer>>;

/// How the load generator reaches a secure server: TLS (`--tls-ca`, and `--tls-cert`/`--tls-key`
/// for mutual TLS) and a bearer token (`--token`). The default is plaintext without a token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// TLS client configuration; `None`: plaintext.
    pub tls: Option<TlsReloader>,
    /// The `authorization` header sent on every call.
    pub bearer: Bearer,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.tls.as_ref().map(TlsReloader::files) == other.tls.as_ref().map(TlsReloader::files)
            && self.bearer == other.bearer
    }
}

/// Opens `connections` separate HTTP/2 connections to `url` (each `Endpoint::connect` dials its
/// own), over TLS when `credentials` say so, failing if any cannot be established.
pub async fn connect(
    url: &str,
    connections: usize,
    credentials: &Credentials,
) -> anyhow::Result<Vec<Client>> {
    let url = if url.contains("://") {
        kiln_security::wire_url(url)
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid url {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = kiln_security::connect(endpoint.clone(), credentials.tls.as_ref())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(
            GrpcInferenceServiceClient::with_interceptor(channel, credentials.bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    }
    Ok(clients)
}

/// Reads ModelMetadata and ModelConfig of `target.model` and plans the inputs of a
/// `batch_size` request. Variable per-item dimensions (`-1`) are sent as 1 (with a warning on
/// stderr).
pub async fn describe(client: &mut Client, target: &TargetConfig) -> anyhow::Result<ModelPlan> {
    describe_model(client, target, &target.model).await
}

/// [`describe`] for the model named `model`.
pub async fn describe_model(
    client: &mut Client,
    target: &TargetConfig,
    model: &str,
) -> anyhow::Result<ModelPlan> {
    let target = &TargetConfig {
        model: model.to_string(),
        ..target.clone()
    };
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: target.model.clone(),
            version: target.model_version.clone(),
        })
        .await
        .with_context(|| format!("ModelMetadata of {}", target.model))?
        .into_inner();
    let config = client
        .model_config(ModelConfigRequest {
            name: target.model.clone(),
            version: target.model_version.clone(),
        })
        .await
        .with_context(|| format!("ModelConfig of {}", target.model))?
        .into_inner()
        .config
        .context("ModelConfig without a config")?;
    let max_batch_size = i64::from(config.max_batch_size);
    let batch = i64::try_from(target.batch_size)?;
    if max_batch_size == 0 && batch != 1 {
        bail!(
            "{} does not batch (max_batch_size 0): use --batch-size 1",
            target.model
        );
    }
    if max_batch_size > 0 && batch > max_batch_size {
        bail!("--batch-size {batch} exceeds the model's max_batch_size {max_batch_size}");
    }
    let mut inputs = Vec::with_capacity(metadata.inputs.len());
    for tensor in metadata.inputs {
        if Datatype::parse(&tensor.datatype).is_none() {
            bail!(
                "input {}: unknown datatype {:?}",
                tensor.name,
                tensor.datatype
            );
        }
        // Per-item dims from ModelConfig (batch excluded); metadata's shape as a fallback.
        let item_dims = match config.input.iter().find(|i| i.name == tensor.name) {
            Some(input) => input.dims.clone(),
            None if max_batch_size > 0 => tensor.shape.iter().skip(1).copied().collect(),
            None => tensor.shape.clone(),
        };
        let mut shape: Vec<i64> = if max_batch_size > 0 {
            vec![batch]
        } else {
            vec![]
        };
        for d in item_dims {
            if d < 0 {
                eprintln!(
                    "warning: input {} has a variable dimension; sending 1",
                    tensor.name
                );
            }
            shape.push(d.max(1));
        }
        inputs.push(InputPlan {
            name: tensor.name,
            datatype: tensor.datatype,
            shape,
        });
    }
    Ok(ModelPlan {
        max_batch_size,
        inputs,
    })
}

/// `target.pool_size` distinct requests of random data shaped by `plan`.
pub fn build_pool(plan: &ModelPlan, target: &TargetConfig) -> Vec<ModelInferRequest> {
    let mut rng = StdRng::seed_from_u64(target.seed);
    (0..target.pool_size.max(1))
        .map(|_| ModelInferRequest {
            model_name: target.model.clone(),
            model_version: target.model_version.clone(),
            inputs: plan
                .inputs
                .iter()
                .map(|i| InferInputTensor {
                    name: i.name.clone(),
                    datatype: i.datatype.clone(),
                    shape: i.shape.clone(),
                    ..InferInputTensor::default()
                })
                .collect(),
            raw_input_contents: plan
                .inputs
                .iter()
                .map(|i| {
                    let datatype = Datatype::parse(&i.datatype).expect("checked by describe");
                    let count = i.shape.iter().product::<i64>().max(0) as usize;
                    random_raw(datatype, count, target.input_range, &mut rng)
                })
                .collect(),
            ..ModelInferRequest::default()
        })
        .collect()
}

/// A pre-built request and, with `--validate`, the outputs expected of it.
#[derive(Debug, Clone)]
pub struct Pooled {
    /// The request.
    pub request: ModelInferRequest,
    /// Its expected outputs.
    pub expected: Option<Arc<ExpectedOutputs>>,
}

/// Every model of a run, described, with its request pool.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The models and their weights ([`TargetConfig::mix`]).
    pub models: Vec<WeightedModel>,
    /// Their plans, in the same order.
    pub plans: Vec<ModelPlan>,
    /// Their request pools, in the same order (each at least one request).
    pub pools: Vec<Vec<Pooled>>,
    /// Validation tolerance (`None`: answers are not validated).
    pub tolerance: Option<f64>,
    /// Input drift (`None`: the pooled requests are sent as built).
    pub drift: Option<Drift>,
}

/// The drift and when it started (set by [`Call::begin`]).
#[derive(Debug)]
struct Drifting {
    drift: Drift,
    seed: u64,
    /// Per model: whether its first dimension is the batch.
    batching: Vec<bool>,
    origin: OnceLock<tokio::time::Instant>,
}

/// `--input-data` and the expected outputs, read once per run.
fn read_data(target: &TargetConfig) -> anyhow::Result<Option<InputData>> {
    let Some(path) = &target.input_data else {
        anyhow::ensure!(
            target.validate.is_none(),
            "--validate needs --input-data (with validation_data, or --expected)"
        );
        return Ok(None);
    };
    let mut data = inputs::load(path)?;
    if let Some(expected) = &target.expected {
        data.expected = inputs::load_expected(expected)?;
    }
    if target.validate.is_some() {
        anyhow::ensure!(
            data.expected.len() == data.rows.len(),
            "--validate: {} expected outputs for {} input rows",
            data.expected.len(),
            data.rows.len()
        );
    }
    Ok(Some(data))
}

/// The requests of `data` for `plan`: its rows in order, `batch_size` per request (the last
/// request wraps around to the first rows), with the rows' expected outputs.
fn data_pool(
    plan: &ModelPlan,
    target: &TargetConfig,
    data: &InputData,
) -> anyhow::Result<Vec<Pooled>> {
    let batch = target.batch_size.max(1);
    let requests = data.rows.len().div_ceil(batch);
    (0..requests)
        .map(|k| {
            let rows: Vec<usize> = (k * batch..(k + 1) * batch)
                .map(|i| i % data.rows.len())
                .collect();
            let batch_rows: Vec<&inputs::Row> = rows.iter().map(|&i| &data.rows[i]).collect();
            let (inputs, raw) = inputs::encode(&plan.inputs, plan.max_batch_size > 0, &batch_rows)
                .with_context(|| format!("model {}", target.model))?;
            let mut expected = ExpectedOutputs::new();
            for &i in &rows {
                for (name, values) in data.expected.get(i).into_iter().flatten() {
                    expected.entry(name.clone()).or_default().extend(values);
                }
            }
            let request = ModelInferRequest {
                model_name: target.model.clone(),
                model_version: target.model_version.clone(),
                inputs,
                raw_input_contents: raw,
                ..ModelInferRequest::default()
            };
            Ok(Pooled {
                request,
                expected: (target.validate.is_some()).then(|| Arc::new(expected)),
            })
        })
        .collect()
}

/// Describes every model of `target` and builds its pool.
pub async fn prepare(client: &mut Client, target: &TargetConfig) -> anyhow::Result<Prepared> {
    let models = target.mix();
    let data = read_data(target)?;
    let mut plans = Vec::with_capacity(models.len());
    let mut pools = Vec::with_capacity(models.len());
    for (i, model) in models.iter().enumerate() {
        let plan = describe_model(client, target, &model.name).await?;
        let mut own = TargetConfig {
            model: model.name.clone(),
            ..target.clone()
        };
        own.seed = target.seed.wrapping_add(i as u64);
        let pool = match &data {
            Some(data) => data_pool(&plan, &own, data)?,
            None => build_pool(&plan, &own)
                .into_iter()
                .map(|request| Pooled {
                    request,
                    expected: None,
                })
                .collect(),
        };
        pools.push(pool);
        plans.push(plan);
    }
    Ok(Prepared {
        models,
        plans,
        pools,
        tolerance: target.validate,
        drift: target.drift.clone(),
    })
}

/// Sends pooled requests round-robin over the connections: request `n` goes to model
/// `mix.pick(n)` (weighted, seeded) as its pool entry `n % pool` on connection `n % K`.
#[derive(Clone)]
pub struct InferCall {
    clients: Arc<[Client]>,
    pools: Arc<[Vec<Pooled>]>,
    mix: Mix,
    tolerance: Option<f64>,
    drift: Option<Arc<Drifting>>,
    timeout: Option<Duration>,
}

impl InferCall {
    /// A call of one model over `clients` (at least one) cycling `pool` (at least one
    /// request), with an optional per-request deadline.
    pub fn new(
        clients: Vec<Client>,
        pool: Vec<ModelInferRequest>,
        timeout: Option<Duration>,
    ) -> Self {
        let only = WeightedModel {
            name: String::new(),
            weight: 1,
        };
        let pool = pool
            .into_iter()
            .map(|request| Pooled {
                request,
                expected: None,
            })
            .collect();
        let prepared = Prepared {
            models: vec![only],
            plans: vec![ModelPlan::default()],
            pools: vec![pool],
            tolerance: None,
            drift: None,
        };
        Self::of(clients, prepared, 0, timeout)
    }

    /// A call of every model of `prepared`, picked by weight with `seed`.
    pub fn of(
        clients: Vec<Client>,
        prepared: Prepared,
        seed: u64,
        timeout: Option<Duration>,
    ) -> Self {
        assert!(!clients.is_empty() && prepared.pools.iter().all(|p| !p.is_empty()));
        let drift = prepared.drift.map(|drift| {
            Arc::new(Drifting {
                drift,
                seed,
                batching: prepared
                    .plans
                    .iter()
                    .map(|p| p.max_batch_size > 0)
                    .collect(),
                origin: OnceLock::new(),
            })
        });
        Self {
            drift,
            clients: clients.into(),
            mix: Mix::new(&prepared.models, seed),
            pools: prepared.pools.into(),
            tolerance: prepared.tolerance,
            timeout,
        }
    }
}

/// The status of an answer that missed the client-side deadline.
fn late() -> Status {
    Status::deadline_exceeded("kiln-loadtest: no answer within --timeout")
}

impl Call for InferCall {
    async fn call(&self, n: u64) -> Answer {
        let model = self.mix.pick(n);
        let pool = &self.pools[model];
        let pooled = &pool[(n % pool.len() as u64) as usize];
        let request = match &self.drift {
            None => pooled.request.clone(),
            Some(d) => {
                let origin = d
                    .origin
                    .get()
                    .copied()
                    .unwrap_or_else(tokio::time::Instant::now);
                let f = d.drift.factor(origin.elapsed());
                let seed = d.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d);
                d.drift.apply(&pooled.request, d.batching[model], f, seed)
            }
        };
        let result = self.send(n, request).await;
        let answered = Some(tokio::time::Instant::now());
        let mismatch = match (&result, self.tolerance, &pooled.expected) {
            (Ok(response), Some(tolerance), Some(expected)) => {
                validate::compare(response, expected, tolerance)
            }
            _ => None,
        };
        Answer {
            model,
            result: result.map(drop),
            mismatch,
            answered,
        }
    }

    fn begin(&self, measure_from: tokio::time::Instant) {
        if let Some(d) = &self.drift {
            let _ = d.origin.set(measure_from);
        }
    }
}

impl InferCall {
    async fn send(&self, n: u64, request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let mut client = self.clients[(n % self.clients.len() as u64) as usize].clone();
        let mut request = Request::new(request);
        let answer = match self.timeout {
            None => client.model_infer(request).await,
            Some(deadline) => {
                // The server sees `grpc-timeout`; the client stops waiting at the same deadline
                // and, as tokio's timer is coarse (1 ms), also counts a late answer as a miss.
                request.set_timeout(deadline);
                let sent = tokio::time::Instant::now();
                match tokio::time::timeout(deadline, client.model_infer(request)).await {
                    Ok(_) if sent.elapsed() > deadline => return Err(late()),
                    Ok(answer) => answer,
                    Err(_) => return Err(late()),
                }
            }
        };
        answer.map(tonic::Response::into_inner)
    }
}
