//! Triton's system shared memory extension, served by the gateway (`--shared-memory`): a caller
//! on the gateway's host registers POSIX shared memory objects (`shm_open` names, which Linux
//! keeps under `/dev/shm`) as named regions, then names a region, offset and size in an input's
//! or output's parameters instead of sending the bytes. The gateway reads such inputs into the
//! request it forwards (workers may run anywhere and take tensors only in the request), and
//! writes such outputs into their regions from the worker's answer, leaving their entries in
//! the answer's `raw_output_contents` empty, as Triton does.
//!
//! Guarantees: a region lies inside its object (checked at registration, and the mapping is
//! the object's length then); reads and writes stay inside their region (offset and size
//! checked, overflow included); keys are single names under `/dev/shm` (no `/` or `..`); at most
//! [`MAX_REGIONS`] regions. Like Triton, the gateway does not synchronise with the caller's own
//! accesses to the memory: the caller must not change an input region before the answer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use kiln_proto::inference::infer_parameter::ParameterChoice;
use kiln_proto::inference::system_shared_memory_status_response::RegionStatus;
use kiln_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, SystemSharedMemoryRegisterRequest,
};
use memmap2::MmapRaw;

use crate::error::Error;

/// Most regions registered at once.
pub const MAX_REGIONS: usize = 1024;

const REGION: &str = "shared_memory_region";
const OFFSET: &str = "shared_memory_offset";
const BYTE_SIZE: &str = "shared_memory_byte_size";

struct Region {
    status: RegionStatus,
    map: MmapRaw,
}

type Regions = RwLock<HashMap<String, Arc<Region>>>;

/// The registered regions; `None` inside when the extension is off.
#[derive(Clone)]
pub struct SharedMemory {
    regions: Option<Arc<Regions>>,
    /// Most input bytes one request may read out of regions (`--max-message-bytes`: what the
    /// request could have carried itself).
    max_input_bytes: usize,
}

/// Where one output of a request goes: its name and the slice of a region.
#[derive(Clone)]
pub struct OutputTarget {
    name: String,
    region: Arc<Region>,
    offset: usize,
    byte_size: usize,
}

fn param_u64(p: &InferParameter) -> Option<u64> {
    match p.parameter_choice.as_ref()? {
        ParameterChoice::Int64Param(v) => u64::try_from(*v).ok(),
        ParameterChoice::Uint64Param(v) => Some(*v),
        _ => None,
    }
}

/// The region slice named by a tensor's parameters, if it names one.
fn slice_of(
    tensor: &str,
    params: &HashMap<String, InferParameter>,
) -> Result<Option<(String, u64, u64)>, Error> {
    let Some(region) = params.get(REGION) else {
        return Ok(None);
    };
    let bad = |what: &str| Error::InvalidRequest(format!("tensor {tensor:?}: {what}"));
    let Some(ParameterChoice::StringParam(name)) = region.parameter_choice.as_ref() else {
        return Err(bad("shared_memory_region must be a string"));
    };
    let offset = match params.get(OFFSET) {
        Some(p) => param_u64(p).ok_or_else(|| bad("shared_memory_offset must be an integer"))?,
        None => 0,
    };
    let size = params
        .get(BYTE_SIZE)
        .and_then(param_u64)
        .ok_or_else(|| bad("shared_memory_byte_size is required with shared_memory_region"))?;
    Ok(Some((name.clone(), offset, size)))
}

fn strip(params: &mut HashMap<String, InferParameter>) {
    for key in [REGION, OFFSET, BYTE_SIZE] {
        params.remove(key);
    }
}

impl Region {
    /// Checks that `offset..offset + size` lies in the region; the start within the mapping.
    fn span(&self, tensor: &str, offset: u64, size: u64) -> Result<(usize, usize), Error> {
        let end = offset.checked_add(size);
        if end.is_none_or(|end| end > self.status.byte_size) {
            return Err(Error::InvalidRequest(format!(
                "tensor {tensor:?}: {size} bytes at offset {offset} pass the end of region {:?} \
                 ({} bytes)",
                self.status.name, self.status.byte_size
            )));
        }
        // Registration checked that offset + byte_size of the region fits the mapping.
        let start = usize::try_from(self.status.offset + offset)
            .map_err(|_| Error::InvalidRequest(format!("tensor {tensor:?}: offset too large")))?;
        let size = usize::try_from(size)
            .map_err(|_| Error::InvalidRequest(format!("tensor {tensor:?}: size too large")))?;
        Ok((start, size))
    }

    fn read(&self, start: usize, size: usize) -> Bytes {
        let mut out = vec![0u8; size];
        // SAFETY: `span` keeps start + size within the mapping, which lives as long as `self`;
        // the bytes may change under us (shared memory), which a u8 copy tolerates.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(start), out.as_mut_ptr(), size);
        }
        Bytes::from(out)
    }

    fn write(&self, start: usize, data: &[u8]) {
        // SAFETY: as in `read`; the caller checked data.len() against the span.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(start),
                data.len(),
            );
        }
    }
}

impl SharedMemory {
    /// The extension, on or off; a request reads at most `max_input_bytes` from regions.
    pub fn new(enabled: bool, max_input_bytes: usize) -> Self {
        Self {
            regions: enabled.then(Arc::default),
            max_input_bytes,
        }
    }

    /// Whether the extension is on.
    pub fn enabled(&self) -> bool {
        self.regions.is_some()
    }

    fn regions(&self) -> Result<&Arc<Regions>, Error> {
        self.regions.as_ref().ok_or(Error::SharedMemoryOff)
    }

    fn region(&self, name: &str) -> Result<Arc<Region>, Error> {
        let regions = self.regions()?.read().unwrap_or_else(|p| p.into_inner());
        regions
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownRegion(name.to_owned()))
    }

    /// Registers a region (blocking: opens and maps the object).
    pub fn register(&self, req: &SystemSharedMemoryRegisterRequest) -> Result<(), Error> {
        let regions = self.regions()?;
        let bad = |what: String| Error::InvalidRequest(format!("region {:?}: {what}", req.name));
        if req.name.is_empty() || req.name.len() > 256 {
            return Err(bad("a region needs a name of 1 to 256 bytes".into()));
        }
        let key = req.key.strip_prefix('/').unwrap_or(&req.key);
        if key.is_empty() || key.contains('/') || key == "." || key == ".." {
            return Err(bad(format!(
                "key {:?} is not a shared memory object name",
                req.key
            )));
        }
        let path = std::path::Path::new("/dev/shm").join(key);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                bad(format!(
                    "cannot open shared memory object {:?}: {e}",
                    req.key
                ))
            })?;
        let len = file.metadata().map_err(|e| bad(format!("{e}")))?.len();
        if req.byte_size == 0
            || req
                .offset
                .checked_add(req.byte_size)
                .is_none_or(|end| end > len)
        {
            return Err(bad(format!(
                "{} bytes at offset {} do not fit object {:?} of {len} bytes",
                req.byte_size, req.offset, req.key
            )));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| bad(format!("cannot map it: {e}")))?;
        let mut regions = regions.write().unwrap_or_else(|p| p.into_inner());
        if regions.contains_key(&req.name) {
            return Err(Error::RegionExists(req.name.clone()));
        }
        if regions.len() >= MAX_REGIONS {
            return Err(Error::TooManyRegions(MAX_REGIONS));
        }
        let status = RegionStatus {
            name: req.name.clone(),
            key: req.key.clone(),
            offset: req.offset,
            byte_size: req.byte_size,
        };
        regions.insert(req.name.clone(), Arc::new(Region { status, map }));
        Ok(())
    }

    /// Unregisters `name`, or every region when it is empty (an unknown name is no error).
    pub fn unregister(&self, name: &str) -> Result<(), Error> {
        let mut regions = self.regions()?.write().unwrap_or_else(|p| p.into_inner());
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
        Ok(())
    }

    /// The status of `name`, or of every region when it is empty.
    pub fn status(&self, name: &str) -> Result<HashMap<String, RegionStatus>, Error> {
        if !name.is_empty() {
            let region = self.region(name)?;
            return Ok(HashMap::from([(name.to_owned(), region.status.clone())]));
        }
        let regions = self.regions()?.read().unwrap_or_else(|p| p.into_inner());
        Ok(regions
            .iter()
            .map(|(k, r)| (k.clone(), r.status.clone()))
            .collect())
    }

    /// Reads the request's inputs that are in shared memory into its `raw_input_contents` (one
    /// per input, in order, as workers take them) and takes its outputs that go to shared
    /// memory out of it; returns where those outputs go.
    pub fn resolve(&self, req: &mut ModelInferRequest) -> Result<Vec<OutputTarget>, Error> {
        let uses = req.inputs.iter().any(|t| t.parameters.contains_key(REGION))
            || req
                .outputs
                .iter()
                .any(|t| t.parameters.contains_key(REGION));
        if !uses {
            return Ok(Vec::new());
        }
        self.regions()?;
        let typed = req.raw_input_contents.is_empty()
            && req
                .inputs
                .iter()
                .any(|t| !t.parameters.contains_key(REGION) && t.contents.is_some());
        let mut given = std::mem::take(&mut req.raw_input_contents).into_iter();
        let mut raw = Vec::with_capacity(req.inputs.len());
        let mut read = 0usize;
        for input in &mut req.inputs {
            match slice_of(&input.name, &input.parameters)? {
                Some((name, offset, size)) => {
                    if typed {
                        return Err(Error::InvalidRequest(format!(
                            "input {:?} is in shared memory while others have typed contents: \
                             send the others in raw_input_contents",
                            input.name
                        )));
                    }
                    let region = self.region(&name)?;
                    let (start, size) = region.span(&input.name, offset, size)?;
                    read += size;
                    if read > self.max_input_bytes {
                        return Err(Error::TooLarge(format!(
                            "inputs in shared memory over {} bytes (--max-message-bytes)",
                            self.max_input_bytes
                        )));
                    }
                    raw.push(region.read(start, size));
                    strip(&mut input.parameters);
                }
                None if typed => {}
                None => raw.push(given.next().ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "input {:?}: fewer raw_input_contents than inputs not in shared memory",
                        input.name
                    ))
                })?),
            }
        }
        if given.next().is_some() {
            return Err(Error::InvalidRequest(
                "more raw_input_contents than inputs not in shared memory".into(),
            ));
        }
        req.raw_input_contents = raw;
        let mut targets = Vec::new();
        for output in &mut req.outputs {
            if let Some((name, offset, size)) = slice_of(&output.name, &output.parameters)? {
                let region = self.region(&name)?;
                let (offset, byte_size) = region.span(&output.name, offset, size)?;
                targets.push(OutputTarget {
                    name: output.name.clone(),
                    region,
                    offset,
                    byte_size,
                });
                strip(&mut output.parameters);
            }
        }
        Ok(targets)
    }

    /// Writes the answer's outputs that go to shared memory into their regions and empties
    /// their `raw_output_contents` entries.
    pub fn deliver(targets: &[OutputTarget], resp: &mut ModelInferResponse) -> Result<(), Error> {
        if targets.is_empty() {
            return Ok(());
        }
        if resp.raw_output_contents.len() != resp.outputs.len() {
            return Err(Error::InvalidRequest(
                "outputs in shared memory need a raw answer from the worker".into(),
            ));
        }
        let contents = std::mem::take(&mut resp.raw_output_contents);
        for (output, bytes) in resp.outputs.iter().zip(contents) {
            match targets.iter().find(|t| t.name == output.name) {
                Some(t) if bytes.len() > t.byte_size => {
                    return Err(Error::InvalidRequest(format!(
                        "output {:?} has {} bytes, more than its {} in shared memory",
                        output.name,
                        bytes.len(),
                        t.byte_size
                    )));
                }
                Some(t) => {
                    t.region.write(t.offset, &bytes);
                    // One entry per output, empty for those in shared memory (as Triton).
                    resp.raw_output_contents.push(Bytes::new());
                }
                None => resp.raw_output_contents.push(bytes),
            }
        }
        Ok(())
    }
}
