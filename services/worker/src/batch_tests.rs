use super::*;

/// A queued request for the pure tests: rows, a signature, liveness.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    id: u32,
    rows: usize,
    sig: u8,
    live: bool,
    at: Instant,
}

impl Pending for Req {
    fn rows(&self) -> usize {
        self.rows
    }
    fn merges_with(&self, other: &Self) -> bool {
        self.sig == other.sig
    }
    fn is_live(&self, _: Instant) -> bool {
        self.live
    }
    fn enqueued(&self) -> Instant {
        self.at
    }
}

fn req(id: u32, rows: usize, at: Instant) -> Req {
    Req {
        id,
        rows,
        sig: 0,
        live: true,
        at,
    }
}

fn ids(v: &[Req]) -> Vec<u32> {
    v.iter().map(|r| r.id).collect()
}

fn policy(max: usize, preferred: &[usize], delay_ms: u64) -> Policy {
    Policy {
        max_batch_size: max,
        preferred: preferred.to_vec(),
        max_queue_delay: Duration::from_millis(delay_ms),
    }
}

/// Takes the first request and fills a batch at `now`.
fn form(q: &mut Queues<Req>, p: &Policy, now: Instant) -> (Vec<Req>, Vec<Req>, Step) {
    let mut dead = Vec::new();
    let first = take_first(q, &mut dead, now).expect("a live request");
    let mut batch = vec![first];
    let step = fill(q, &mut batch, &mut dead, p, now);
    (batch, dead, step)
}

#[test]
fn priority_parameter_follows_triton() {
    assert_eq!(Priority::from_level(1), Priority::High);
    for level in [0, 2, 3, u64::MAX] {
        assert_eq!(Priority::from_level(level), Priority::Normal);
    }
}

#[test]
fn high_priority_leaves_first_then_arrival_order() {
    let t = Instant::now();
    let mut q = Queues::default();
    q.push(req(1, 1, t), Priority::Normal);
    q.push(req(2, 1, t), Priority::High);
    q.push(req(3, 1, t), Priority::Normal);
    q.push(req(4, 1, t), Priority::High);
    assert_eq!(q.len(), 4);
    let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|r| r.id).collect();
    assert_eq!(order, [2, 4, 1, 3]);
    assert!(q.is_empty());
}

#[test]
fn gathers_up_to_the_maximum_without_skipping_ahead() {
    let t = Instant::now();
    let mut q = Queues::default();
    for (id, rows) in [(1, 1), (2, 3), (3, 5), (4, 1)] {
        q.push(req(id, rows, t), Priority::Normal);
    }
    let (batch, dead, step) = form(&mut q, &policy(8, &[], 0), t);
    // 1 + 3 = 4; adding 5 would exceed 8, and request 4 must not jump ahead of request 3.
    assert_eq!(ids(&batch), [1, 2]);
    assert!(dead.is_empty());
    assert_eq!(step, Step::Run);
    let (batch, _, step) = form(&mut q, &policy(8, &[], 0), t);
    assert_eq!(ids(&batch), [3, 4]);
    assert_eq!(step, Step::Run, "a delay of 0 never waits");
}

#[test]
fn stops_at_a_preferred_size_or_the_maximum() {
    let t = Instant::now();
    let mut q = Queues::default();
    for id in 1..=6 {
        q.push(req(id, 1, t), Priority::Normal);
    }
    let (batch, _, step) = form(&mut q, &policy(8, &[2, 4], 1000), t);
    assert_eq!(ids(&batch), [1, 2]);
    assert_eq!(step, Step::Run);
    let (batch, _, step) = form(&mut q, &policy(3, &[], 1000), t);
    assert_eq!(ids(&batch), [3, 4, 5]);
    assert_eq!(step, Step::Run);
}

#[test]
fn waits_until_the_oldest_request_has_waited_the_delay() {
    let t = Instant::now();
    let mut q = Queues::default();
    q.push(req(1, 1, t), Priority::Normal);
    q.push(req(2, 2, t), Priority::Normal);
    let p = policy(8, &[], 5);
    let now = t + Duration::from_millis(1);
    let (mut batch, mut dead, step) = form(&mut q, &p, now);
    assert_eq!(ids(&batch), [1, 2]);
    assert_eq!(step, Step::WaitUntil(t + Duration::from_millis(5)));
    // A late arrival joins; once the delay is over the batch runs.
    q.push(req(3, 1, now), Priority::Normal);
    let later = t + Duration::from_millis(5);
    assert_eq!(fill(&mut q, &mut batch, &mut dead, &p, later), Step::Run);
    assert_eq!(ids(&batch), [1, 2, 3]);
}

#[test]
fn dead_requests_never_join_and_incompatible_ones_run_apart() {
    let t = Instant::now();
    let mut q = Queues::default();
    q.push(
        Req {
            live: false,
            ..req(1, 1, t)
        },
        Priority::Normal,
    );
    q.push(req(2, 1, t), Priority::Normal);
    q.push(
        Req {
            live: false,
            ..req(3, 1, t)
        },
        Priority::Normal,
    );
    q.push(req(4, 1, t), Priority::Normal);
    q.push(
        Req {
            sig: 9,
            ..req(5, 1, t)
        },
        Priority::Normal,
    );
    q.push(req(6, 1, t), Priority::Normal);
    let (batch, dead, step) = form(&mut q, &policy(8, &[], 1000), t);
    assert_eq!(ids(&batch), [2, 4]);
    assert_eq!(ids(&dead), [1, 3]);
    assert_eq!(
        step,
        Step::Run,
        "no waiting behind a request that cannot join"
    );
    let (batch, _, _) = form(&mut q, &policy(8, &[], 1000), t);
    assert_eq!(ids(&batch), [5]);
}

#[test]
fn models_without_a_batch_dimension_never_merge() {
    let t = Instant::now();
    let mut q = Queues::default();
    q.push(req(1, 1, t), Priority::Normal);
    q.push(req(2, 1, t), Priority::Normal);
    let (batch, _, step) = form(&mut q, &policy(0, &[], 1000), t);
    assert_eq!(ids(&batch), [1]);
    assert_eq!(step, Step::Run);
}

fn tensor(shape: Vec<usize>, data: HostData) -> HostTensor {
    HostTensor { shape, data }
}

#[test]
fn concat_and_split_give_each_request_its_rows() {
    let a: Tensors = vec![
        (
            "x".into(),
            tensor(vec![1, 2], HostData::F32(vec![1.0, 2.0])),
        ),
        ("k".into(), tensor(vec![1], HostData::I64(vec![7]))),
    ];
    let b: Tensors = vec![
        (
            "x".into(),
            tensor(vec![2, 2], HostData::F32(vec![3.0, 4.0, 5.0, 6.0])),
        ),
        ("k".into(), tensor(vec![2], HostData::I64(vec![8, 9]))),
    ];
    assert!(same_signature(&a, &b));
    assert_eq!(rows_of(&a, true), 1);
    assert_eq!(rows_of(&b, true), 2);
    assert_eq!(rows_of(&b, false), 1);
    let merged = concat(&[&a, &b]).unwrap();
    assert_eq!(merged[0].1.shape, [3, 2]);
    assert_eq!(
        merged[0].1.data,
        HostData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    assert_eq!(merged[1].1.data, HostData::I64(vec![7, 8, 9]));
    // Splitting the merged tensors (as if they were outputs) gives the requests back; an output
    // without the batch's rows goes whole to each request.
    let mut outputs = merged;
    outputs.push(("scale".into(), tensor(vec![1], HostData::F64(vec![0.5]))));
    let parts = split(outputs, &[1, 2]);
    assert_eq!(parts[0][..2], a[..]);
    assert_eq!(parts[1][..2], b[..]);
    assert_eq!(parts[0][2].1.data, HostData::F64(vec![0.5]));
    assert_eq!(parts[1][2].1.data, HostData::F64(vec![0.5]));
}

#[test]
fn different_item_shapes_do_not_merge() {
    let a: Tensors = vec![("x".into(), tensor(vec![1, 2], HostData::F32(vec![0.0; 2])))];
    let b: Tensors = vec![("x".into(), tensor(vec![1, 3], HostData::F32(vec![0.0; 3])))];
    let c: Tensors = vec![("x".into(), tensor(vec![1, 2], HostData::I32(vec![0; 2])))];
    let d: Tensors = vec![("z".into(), tensor(vec![1, 2], HostData::F32(vec![0.0; 2])))];
    assert!(!same_signature(&a, &b));
    assert!(!same_signature(&a, &c));
    assert!(!same_signature(&a, &d));
    assert!(concat(&[&a, &b]).is_err());
    assert!(concat(&[&a, &c]).is_err());
}

#[test]
fn prune_moves_members_that_died_while_waiting() {
    let t = Instant::now();
    let mut batch = vec![
        req(1, 1, t),
        Req {
            live: false,
            ..req(2, 1, t)
        },
        req(3, 1, t),
    ];
    let mut dead = Vec::new();
    prune(&mut batch, &mut dead, t);
    assert_eq!(ids(&batch), [1, 3]);
    assert_eq!(ids(&dead), [2]);
}
