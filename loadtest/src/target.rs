//! The server under test: `K` separate connections, the model's input signature (read from
//! ModelMetadata and ModelConfig), a pool of pre-built requests of random data within that
//! signature, and the [`InferCall`] that sends them.
//!
//! Requests are built before the load starts and cycled, so building them is never measured;
//! cloning one is cheap (tensor bytes are `bytes::Bytes`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_proto::inference::model_infer_request::InferInputTensor;
use kiln_proto::inference::{ModelConfigRequest, ModelInferRequest, ModelMetadataRequest};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::config::TargetConfig;
use crate::data::random_raw;
use crate::load::Call;

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

/// Opens `connections` separate HTTP/2 connections to `url` (each `Endpoint::connect` dials its
/// own), failing if any cannot be established.
pub async fn connect(
    url: &str,
    connections: usize,
) -> anyhow::Result<Vec<GrpcInferenceServiceClient<Channel>>> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid url {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(
            GrpcInferenceServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    }
    Ok(clients)
}

/// Reads ModelMetadata and ModelConfig and plans the inputs of a `batch_size` request.
/// Variable per-item dimensions (`-1`) are sent as 1 (with a warning on stderr).
pub async fn describe(
    client: &mut GrpcInferenceServiceClient<Channel>,
    target: &TargetConfig,
) -> anyhow::Result<ModelPlan> {
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

/// Sends pooled requests round-robin over the connections: request `n` is pool entry
/// `n % pool` on connection `n % K`.
#[derive(Clone)]
pub struct InferCall {
    clients: Arc<[GrpcInferenceServiceClient<Channel>]>,
    pool: Arc<[ModelInferRequest]>,
    timeout: Option<Duration>,
}

impl InferCall {
    /// A call over `clients` (at least one) cycling `pool` (at least one request), with an
    /// optional per-request deadline.
    pub fn new(
        clients: Vec<GrpcInferenceServiceClient<Channel>>,
        pool: Vec<ModelInferRequest>,
        timeout: Option<Duration>,
    ) -> Self {
        assert!(!clients.is_empty() && !pool.is_empty());
        Self {
            clients: clients.into(),
            pool: pool.into(),
            timeout,
        }
    }
}

/// The status of an answer that missed the client-side deadline.
fn late() -> Status {
    Status::deadline_exceeded("kiln-loadtest: no answer within --timeout")
}

impl Call for InferCall {
    async fn call(&self, n: u64) -> Result<(), Status> {
        let mut client = self.clients[(n % self.clients.len() as u64) as usize].clone();
        let mut request = Request::new(self.pool[(n % self.pool.len() as u64) as usize].clone());
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
        answer.map(drop)
    }
}
