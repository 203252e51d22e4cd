//! The embedding tier's default scorer: a softmax (multinomial logistic regression) classifier over
//! the example vectors, trained when the config loads. It learns which directions of the embedding
//! space separate the routes' *instructions* rather than their topics, which nearest-example and
//! centroid similarity cannot: "summarise this article about Rust" sits near code examples, but
//! the classifier weighs the summarising part. Scores are probabilities that sum to 1.

/// Input scale: unit vectors' dot products are small, so logits need a larger range to separate.
/// (10 and 20 cross-validate within 0.2 points of each other on the centred features; 30 was
/// best before centring.)
const SCALE: f32 = 10.0;
/// Full-batch gradient descent: enough steps for the training loss to settle on a few hundred
/// examples (checked against the held-out split: 100 steps lose ~1 point, 500 gain nothing).
const STEPS: usize = 200;
const LEARNING_RATE: f32 = 1.0;
const L2: f32 = 1e-4;

pub struct Softmax {
    /// `[routes][dim]`, already multiplied by [`SCALE`].
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
    /// The mean example vector, subtracted before each part is renormalised: sentence vectors all
    /// share a large common component (any two e5 vectors have a cosine of ~0.7), and removing it
    /// spreads the routes apart (cross-validated over the router's examples: 89.1 % → 91.8 % with
    /// one pooled layer, and 94.1 % with the two of multilingual-e5-small's).
    center: Vec<f32>,
    /// Equal parts of each vector, centred and renormalised apart (see `Embedder::parts`).
    parts: usize,
}

impl Softmax {
    /// Trains on `(route, unit vector)` pairs for `routes` routes, vectors of `parts` equal parts.
    /// Deterministic (zero start). Plain loops over contiguous rows, compiled for AVX2 where the
    /// CPU has it: ~0.8 G multiply-adds for 600 examples, which candle's small-matrix products
    /// made 0.6 s of every config load.
    pub fn train(examples: &[(usize, Vec<f32>)], routes: usize, parts: usize) -> Result<Self, String> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature `train_avx2` enables.
            #[allow(unsafe_code)]
            return unsafe { Self::train_avx2(examples, routes, parts) };
        }
        Self::train_here(examples, routes, parts)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn train_avx2(examples: &[(usize, Vec<f32>)], routes: usize, parts: usize) -> Result<Self, String> {
        Self::train_here(examples, routes, parts)
    }

    #[inline(always)]
    fn train_here(examples: &[(usize, Vec<f32>)], routes: usize, parts: usize) -> Result<Self, String> {
        let n = examples.len();
        let dim = examples.first().map_or(0, |(_, v)| v.len());
        if examples.iter().any(|(route, v)| v.len() != dim || *route >= routes) {
            return Err("example vectors of differing sizes".into());
        }
        if parts == 0 || !dim.is_multiple_of(parts) {
            return Err(format!("{dim}-dimensional vectors cannot be split into {parts} equal parts"));
        }
        let mut center = vec![0f32; dim];
        examples.iter().for_each(|(_, v)| center.iter_mut().zip(v).for_each(|(c, x)| *c += x / n as f32));
        let features = |v: &[f32]| centered(v, &center, parts);
        let x: Vec<f32> = examples.iter().flat_map(|(_, v)| features(v)).map(|x| x * SCALE).collect();
        let mut w = vec![0f32; routes * dim];
        let mut b = vec![0f32; routes];
        let mut g = vec![0f32; n * routes];
        let mut grad = vec![0f32; routes * dim];
        for _ in 0..STEPS {
            // g = (softmax(x wᵀ + b) - onehot) / n
            for ((row, out), (route, _)) in x.chunks_exact(dim).zip(g.chunks_exact_mut(routes)).zip(examples) {
                for ((o, weights), bias) in out.iter_mut().zip(w.chunks_exact(dim)).zip(&b) {
                    *o = dot(row, weights) + bias;
                }
                let peak = out.iter().fold(f32::MIN, |m, v| m.max(*v));
                out.iter_mut().for_each(|o| *o = (*o - peak).exp());
                let total: f32 = out.iter().sum();
                out.iter_mut().for_each(|o| *o /= total);
                out[*route] -= 1.0;
                // Confident examples leave gradients of 1e-30 and below: subnormal floats make every
                // multiply ~100× slower, and they change nothing, so they are dropped.
                out.iter_mut().for_each(|o| *o = if o.abs() < 1e-12 { 0.0 } else { *o / n as f32 });
            }
            // grad = gᵀ x + L2 w; one pass over the examples per step.
            grad.iter_mut().zip(&w).for_each(|(d, w)| *d = L2 * w);
            for (row, out) in x.chunks_exact(dim).zip(g.chunks_exact(routes)) {
                for (d, coefficient) in grad.chunks_exact_mut(dim).zip(out).filter(|(_, c)| **c != 0.0) {
                    d.iter_mut().zip(row).for_each(|(d, x)| *d += coefficient * x);
                }
            }
            w.iter_mut().zip(&grad).for_each(|(w, d)| *w -= LEARNING_RATE * d);
            for (route, bias) in b.iter_mut().enumerate() {
                *bias -= LEARNING_RATE * g.iter().skip(route).step_by(routes).sum::<f32>();
            }
        }
        let weights = w.chunks_exact(dim).map(|row| row.iter().map(|v| v * SCALE).collect()).collect();
        Ok(Self { weights, bias: b, center, parts })
    }

    /// The probability of each route for a unit `query` vector.
    pub fn probabilities(&self, query: &[f32]) -> Vec<f64> {
        let query = centered(query, &self.center, self.parts);
        let logits: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| f64::from(*b) + w.iter().zip(&query).map(|(w, q)| f64::from(w * q)).sum::<f64>())
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.into_iter().map(|e| e / total).collect()
    }
}

/// `v - center`, each of its `parts` parts renormalised and scaled by 1/√parts.
fn centered(v: &[f32], center: &[f32], parts: usize) -> Vec<f32> {
    let mut out: Vec<f32> = v.iter().zip(center).map(|(x, c)| x - c).collect();
    crate::route::embed::normalize_parts(&mut out, parts);
    out
}

/// Dot product in eight lanes, so it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    let mut lanes = [0f32; 8];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_separable_routes_and_gives_probabilities() {
        // Three routes around three axes of a 4-d space, with a shared fourth component.
        let unit = |v: [f32; 4]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n).to_vec()
        };
        let mut examples = Vec::new();
        for route in 0..3 {
            for jitter in [0.0, 0.2, 0.4] {
                let mut v = [0.5, jitter, 0.1, 0.3];
                v.swap(0, route);
                examples.push((route, unit(v)));
            }
        }
        let model = Softmax::train(&examples, 3, 1).unwrap();
        for route in 0..3 {
            let mut v = [0.6, 0.1, 0.1, 0.3];
            v.swap(0, route);
            let p = model.probabilities(&unit(v));
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(p[route] > 0.8, "route {route}: {p:?}");
        }
        assert!(Softmax::train(&[(0, vec![1.0, 0.0]), (1, vec![1.0])], 2, 1).is_err());
        assert!(Softmax::train(&[(0, vec![1.0, 0.0, 0.0])], 1, 2).is_err());
        assert!(Softmax::train(&[(2, vec![1.0])], 2, 1).is_err());
    }
}
