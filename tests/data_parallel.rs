//! Data-parallel training through `Trainer::set_data_parallel`, with an in-process
//! communicator (one thread per rank, sums in rank order): R ranks give the single-process
//! run's losses and weights up to the order of the sums, every rank holds the same weights,
//! and the same R gives the same bits run to run. The MPI communicator itself is tested under
//! `mpirun` (the `mpi` feature, `.ci/run`).

use std::sync::{Arc, Barrier, Mutex};

use rnnlm::dist::Collective;
use rnnlm::model::config::Cell;
use rnnlm::train::{TrainConfig, Trainer};
use rnnlm::{Config, Softmax};

/// Ranks that are threads: each deposits its buffer, then all sum the deposits in rank order.
struct Threads {
    rank: usize,
    ranks: usize,
    slots: Arc<Mutex<Vec<Vec<f64>>>>,
    barrier: Arc<Barrier>,
}

impl Threads {
    fn group(ranks: usize) -> Vec<Threads> {
        let slots = Arc::new(Mutex::new(vec![Vec::new(); ranks]));
        let barrier = Arc::new(Barrier::new(ranks));
        (0..ranks)
            .map(|rank| Threads {
                rank,
                ranks,
                slots: slots.clone(),
                barrier: barrier.clone(),
            })
            .collect()
    }

    fn sum(&self, buf: &mut [f64]) {
        self.slots.lock().unwrap()[self.rank] = buf.to_vec();
        self.barrier.wait();
        {
            let slots = self.slots.lock().unwrap();
            for (i, x) in buf.iter_mut().enumerate() {
                *x = slots.iter().map(|s| s[i]).sum();
            }
        }
        self.barrier.wait();
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn ranks(&self) -> usize {
        self.ranks
    }
    fn sum_f32(&self, buf: &mut [f32]) -> rnnlm::Result<()> {
        // Summed in f32 in rank order, as an MPI_SUM of floats would.
        let mut wide: Vec<f64> = buf.iter().map(|&x| x as f64).collect();
        self.slots.lock().unwrap()[self.rank] = std::mem::take(&mut wide);
        self.barrier.wait();
        {
            let slots = self.slots.lock().unwrap();
            for (i, x) in buf.iter_mut().enumerate() {
                *x = slots.iter().fold(0.0f32, |a, s| a + s[i] as f32);
            }
        }
        self.barrier.wait();
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> rnnlm::Result<()> {
        self.sum(buf);
        Ok(())
    }
}

fn corpus() -> Vec<u32> {
    (0..8_000u32).map(|i| (i * i + 7 * i) % 211).collect()
}

/// A 2-layer LSTM with a full softmax, or an adaptive one (whose rows a batch touches
/// sparsely: the exchange sends only the parts some rank touched).
fn config(adaptive: bool) -> (Config, TrainConfig) {
    let mut model = Config::new(211, 16, 24)
        .unwrap()
        .with_cell(Cell::Lstm)
        .with_layers(2);
    if adaptive {
        model = model.with_softmax(Softmax::adaptive(&[30, 120], 2.0, true, 24).unwrap());
    }
    let cfg = TrainConfig {
        batch_size: 7,
        time_size: 6,
        lr: 2.0,
        max_grad: Some(0.5),
        epochs: 1,
        eval_interval: Some(1),
        dropout: 0.2,
        ..TrainConfig::default()
    };
    (model, cfg)
}

/// Trains `steps` steps on `ranks` ranks; returns each rank's weights and training losses.
fn train(ranks: usize, steps: usize, adaptive: bool) -> Vec<(Vec<f32>, Vec<f64>)> {
    let data = corpus();
    let (model, cfg) = config(adaptive);
    let run = |comm: Option<Threads>| {
        let mut trainer = Trainer::new(model, cfg.clone()).unwrap();
        if let Some(c) = comm {
            trainer.set_data_parallel(Box::new(c)).unwrap();
        }
        trainer.stop_after_steps(steps);
        let report = trainer.fit(&data, None, None, |_| {}).unwrap();
        let losses = report
            .log
            .iter()
            .filter_map(|p| p.train_ppl.map(f64::ln))
            .collect();
        (trainer.model().params().as_slice().to_vec(), losses)
    };
    if ranks == 1 {
        return vec![run(None)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = Threads::group(ranks)
            .into_iter()
            .map(|c| s.spawn(move || run(Some(c))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_give_the_single_process_run_and_agree_bit_for_bit() {
    for adaptive in [false, true] {
        ranks_match_one_process(adaptive);
    }
}

fn ranks_match_one_process(adaptive: bool) {
    let steps = 10;
    let one = train(1, steps, adaptive).remove(0);
    assert_eq!(one.1.len(), steps);
    let scale = one.0.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    for ranks in [2, 3] {
        let what = format!("{ranks} ranks (adaptive {adaptive})");
        let runs = train(ranks, steps, adaptive);
        for (rank, (w, losses)) in runs.iter().enumerate() {
            assert_eq!(
                w, &runs[0].0,
                "{what}: rank {rank}'s weights differ from rank 0's"
            );
            for (a, b) in one.1.iter().zip(losses) {
                assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: loss {a} vs {b}");
            }
            let d = one
                .0
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                d <= 1e-5 * scale,
                "{what}: weights differ by {d:e} (largest {scale})"
            );
        }
        let again = train(ranks, steps, adaptive);
        assert_eq!(
            again[0].0, runs[0].0,
            "{what}: not the same bits run to run"
        );
    }
    // The runs moved the weights: the comparisons were not of the initial ones.
    let (model, cfg) = config(adaptive);
    let init = Trainer::new(model, cfg).unwrap();
    let moved = init
        .model()
        .params()
        .as_slice()
        .iter()
        .zip(&one.0)
        .any(|(a, b)| (a - b).abs() > 1e-3 * scale);
    assert!(moved, "training changed nothing");
}

#[test]
fn a_data_parallel_run_is_refused_what_it_cannot_do() {
    let (model, cfg) = config(false);
    // More ranks than batch rows.
    let mut t = Trainer::new(model, cfg.clone()).unwrap();
    let comm = Threads::group(8).remove(0);
    let err = t.set_data_parallel(Box::new(comm)).unwrap_err().to_string();
    assert!(err.contains("8 ranks") && err.contains("7 rows"), "{err}");
    // A resume file outside an interruption: the ranks' states are not gathered.
    let mut t = Trainer::new(model, cfg).unwrap();
    t.set_data_parallel(Box::new(Threads::group(2).remove(0)))
        .unwrap();
    let path = std::env::temp_dir().join(format!("rnnlm-dp-{}.resume", std::process::id()));
    let err = t.save_resume(&path, None).unwrap_err().to_string();
    assert!(err.contains("2 ranks"), "{err}");
    assert!(!path.exists(), "a refused resume file was written");
}
