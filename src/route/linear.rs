//! The embedding tier's default scorer: a softmax (multinomial logistic regression) classifier over
//! the example vectors, trained when the config loads. It learns which directions of the embedding
//! space separate the routes' *instructions* rather than their topics, which nearest-example and
//! centroid similarity cannot: "summarise this article about Rust" sits near code examples, but
//! the classifier weighs the summarising part. Scores are probabilities that sum to 1.

use candle_core::{DType, Device, Tensor};

/// Input scale: unit vectors' dot products are small, so logits need a larger range to separate.
const SCALE: f64 = 30.0;
/// Full-batch gradient descent: enough steps for the training loss to settle on a few hundred
/// examples (checked against the held-out split: 100 steps lose ~1 point, 500 gain nothing).
const STEPS: usize = 200;
const LEARNING_RATE: f64 = 1.0;
const L2: f64 = 1e-4;

pub struct Softmax {
    /// `[routes][dim]`, already multiplied by [`SCALE`].
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

impl Softmax {
    /// Trains on `(route, unit vector)` pairs for `routes` routes. Deterministic (zero start).
    pub fn train(examples: &[(usize, Vec<f32>)], routes: usize) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let n = examples.len();
        let dim = examples.first().map_or(0, |(_, v)| v.len());
        let flat: Vec<f32> = examples.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let x = (Tensor::from_vec(flat, (n, dim), &device)? * SCALE)?;
        let mut onehot = vec![0f32; n * routes];
        for (i, (route, _)) in examples.iter().enumerate() {
            onehot[i * routes + route] = 1.0;
        }
        let y = Tensor::from_vec(onehot, (n, routes), &device)?;
        let xt = x.t()?.contiguous()?;
        let mut w = Tensor::zeros((dim, routes), DType::F32, &device)?;
        let mut b = Tensor::zeros(routes, DType::F32, &device)?;
        for _ in 0..STEPS {
            let logits = x.matmul(&w)?.broadcast_add(&b)?;
            let p = candle_nn::ops::softmax_last_dim(&logits)?;
            let g = ((p - &y)? / n as f64)?;
            let grad_w = (xt.matmul(&g)? + (&w * L2)?)?;
            w = (w - (grad_w * LEARNING_RATE)?)?;
            b = (b - (g.sum(0)? * LEARNING_RATE)?)?;
        }
        let weights = (w.t()? * SCALE)?.to_vec2::<f32>()?;
        Ok(Self { weights, bias: b.to_vec1::<f32>()? })
    }

    /// The probability of each route for a unit `query` vector.
    pub fn probabilities(&self, query: &[f32]) -> Vec<f64> {
        let logits: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| f64::from(*b) + w.iter().zip(query).map(|(w, q)| f64::from(w * q)).sum::<f64>())
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.into_iter().map(|e| e / total).collect()
    }
}
