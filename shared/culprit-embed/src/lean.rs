//! The lean inference path: the trained weights as plain `Vec<f32>`, folded for speed.
//!
//! At load time each BatchNorm (eval mode: fixed running statistics) is folded into the Linear
//! before it, dropout disappears, and every categorical embedding table is pre-multiplied by its
//! slice of the input Linear, so the input layer becomes a few table lookups plus a small
//! matmul over the numerics. What remains is three kinds of loop: lookup-add, a row-times-matrix
//! accumulation written so LLVM vectorises it, and ReLU in place.

use crate::error::{EmbedError, Result};
use crate::model::{load_meta, Encoder, ModelMeta, BN_EPS};
use crate::{l2_normalize, Embedder, Embeddings, FeatureRow, EMBED_DIM};
use culprit_core::SourceKind;
use std::collections::HashMap;
use std::path::Path;

/// Rows pushed through the layers together: keeps the activations of a tile in L1/L2.
const TILE: usize = 32;

#[derive(Debug, Clone)]
struct LeanBlock {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// The trained model without candle: same output as [`crate::Model`] (to ~1e-6), several times
/// faster on one core.
#[derive(Debug, Clone)]
pub struct LeanModel {
    meta: ModelMeta,
    encoder: Encoder,
    hidden: usize,
    /// Per categorical column, `[vocab + 1, hidden]`: its embedding table times its slice of the
    /// input Linear.
    cat_proj: Vec<Vec<f32>>,
    /// `[numeric, hidden]`: the numeric slice of the input Linear.
    w_num: Vec<f32>,
    b_in: Vec<f32>,
    blocks: Vec<LeanBlock>,
    w_out: Vec<f32>,
    b_out: Vec<f32>,
}

impl LeanModel {
    /// Loads `model.json` + `model.safetensors` from `dir` without going through candle.
    pub fn load(dir: impl AsRef<Path>) -> Result<LeanModel> {
        let (meta, weights) = load_meta(dir.as_ref())?;
        let bytes = std::fs::read(&weights).map_err(|err| EmbedError::Io {
            path: weights.clone(),
            err,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)?;
        let mut flat = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(EmbedError::Weights(format!(
                    "tensor '{name}' is {:?}, expected f32",
                    view.dtype()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            flat.insert(name, data);
        }
        LeanModel::from_parts(meta, &flat)
    }

    pub(crate) fn from_parts(meta: ModelMeta, t: &HashMap<String, Vec<f32>>) -> Result<LeanModel> {
        let get = |name: &str, len: usize| -> Result<&[f32]> {
            let v = t
                .get(name)
                .ok_or_else(|| EmbedError::Weights(format!("tensor '{name}' is missing")))?;
            if v.len() != len {
                return Err(EmbedError::Weights(format!(
                    "tensor '{name}' has {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        let h = meta.hidden;
        let e = meta.emb_dim;
        let nc = meta.vocabularies.len();
        let nn = meta.numeric_mean.len();
        let d_in = nc * e + nn;
        let w_in = get("in.w", d_in * h)?;
        let mut cat_proj = Vec::with_capacity(nc);
        for (c, vocab) in meta.vocabularies.iter().enumerate() {
            let v = vocab.len() + 1;
            let table = get(&format!("emb.{c}"), v * e)?;
            let slice = &w_in[c * e * h..(c + 1) * e * h];
            let mut proj = vec![0f32; v * h];
            for r in 0..v {
                let out = &mut proj[r * h..(r + 1) * h];
                for (k, &x) in table[r * e..(r + 1) * e].iter().enumerate() {
                    axpy(out, x, &slice[k * h..(k + 1) * h]);
                }
            }
            cat_proj.push(proj);
        }
        let w_num = w_in[nc * e * h..].to_vec();
        let b_in = get("in.b", h)?.to_vec();
        let mut blocks = Vec::with_capacity(meta.blocks);
        for i in 0..meta.blocks {
            let g = |n: &str, len: usize| get(&format!("block.{i}.{n}"), len);
            let (w1, b1) = fold_bn(
                g("lin1.w", h * h)?,
                g("lin1.b", h)?,
                g("bn1.gamma", h)?,
                g("bn1.beta", h)?,
                g("bn1.mean", h)?,
                g("bn1.var", h)?,
            );
            let (w2, b2) = fold_bn(
                g("lin2.w", h * h)?,
                g("lin2.b", h)?,
                g("bn2.gamma", h)?,
                g("bn2.beta", h)?,
                g("bn2.mean", h)?,
                g("bn2.var", h)?,
            );
            blocks.push(LeanBlock { w1, b1, w2, b2 });
        }
        let w_out = get("out.w", h * meta.out_dim)?.to_vec();
        let b_out = get("out.b", meta.out_dim)?.to_vec();
        let encoder = Encoder::from_meta(&meta);
        Ok(LeanModel {
            meta,
            encoder,
            hidden: h,
            cat_proj,
            w_num,
            b_in,
            blocks,
            w_out,
            b_out,
        })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Embeds one tile of already encoded rows into `out` (`rows * 64`).
    #[allow(clippy::too_many_arguments)] // all hot-loop inputs; a struct would only rename them
    fn forward_tile(
        &self,
        cats: &[u32],
        n_total: usize,
        row0: usize,
        nums: &[f32],
        rows: usize,
        out: &mut [f32],
        buf: &mut Buffers,
    ) {
        let h = self.hidden;
        let nn = self.w_num.len() / h.max(1);
        let (x, a, u) = (
            &mut buf.x[..rows * h],
            &mut buf.a[..rows * h],
            &mut buf.u[..rows * h],
        );
        affine(nums, rows, nn, &self.w_num, h, &self.b_in, x);
        for (c, proj) in self.cat_proj.iter().enumerate() {
            for r in 0..rows {
                let id = cats[c * n_total + row0 + r] as usize;
                let src = &proj[id * h..(id + 1) * h];
                for (o, s) in x[r * h..(r + 1) * h].iter_mut().zip(src) {
                    *o += s;
                }
            }
        }
        for b in &self.blocks {
            affine(x, rows, h, &b.w1, h, &b.b1, a);
            relu(a);
            affine(a, rows, h, &b.w2, h, &b.b2, u);
            for (xi, ui) in x.iter_mut().zip(u.iter()) {
                *xi = (*xi + ui).max(0.0);
            }
        }
        affine(x, rows, h, &self.w_out, EMBED_DIM, &self.b_out, out);
        for v in out.chunks_exact_mut(EMBED_DIM) {
            l2_normalize(v);
        }
    }
}

struct Buffers {
    x: Vec<f32>,
    a: Vec<f32>,
    u: Vec<f32>,
}

/// Folds eval-mode BatchNorm into the Linear before it: `bn(xW + b) = x(W*s) + (b - mean)*s + beta`
/// with `s = gamma / sqrt(var + eps)` per output column.
fn fold_bn(
    w: &[f32],
    b: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let m = b.len();
    let s: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + BN_EPS).sqrt())
        .collect();
    let mut wf = w.to_vec();
    for row in wf.chunks_exact_mut(m) {
        for (x, sj) in row.iter_mut().zip(&s) {
            *x *= sj;
        }
    }
    let bf = (0..m).map(|j| (b[j] - mean[j]) * s[j] + beta[j]).collect();
    (wf, bf)
}

/// `out[r] = b + x[r] · w` for `rows` rows; `x` is `[rows, k]`, `w` is `[k, m]`, row-major.
///
/// Four rows at a time share each loaded row of `w`; the inner loops run over equal-length
/// slices, which LLVM turns into packed multiply-adds (SSE2 on the default x86-64 target; a
/// runtime AVX2 dispatch through `pulp` was tried and measured slower, so it is not used).
fn affine(x: &[f32], rows: usize, k: usize, w: &[f32], m: usize, b: &[f32], out: &mut [f32]) {
    for o in out[..rows * m].chunks_exact_mut(m) {
        o.copy_from_slice(b);
    }
    let mut r = 0;
    while r + 4 <= rows {
        let (o0, rest) = out[r * m..(r + 4) * m].split_at_mut(m);
        let (o1, rest) = rest.split_at_mut(m);
        let (o2, o3) = rest.split_at_mut(m);
        let xs = &x[r * k..(r + 4) * k];
        for kk in 0..k {
            let (x0, x1, x2, x3) = (xs[kk], xs[k + kk], xs[2 * k + kk], xs[3 * k + kk]);
            let wr = &w[kk * m..(kk + 1) * m];
            for j in 0..m {
                let wj = wr[j];
                o0[j] += x0 * wj;
                o1[j] += x1 * wj;
                o2[j] += x2 * wj;
                o3[j] += x3 * wj;
            }
        }
        r += 4;
    }
    for r in r..rows {
        let o = &mut out[r * m..(r + 1) * m];
        for (kk, &xv) in x[r * k..(r + 1) * k].iter().enumerate() {
            if xv != 0.0 {
                axpy(o, xv, &w[kk * m..(kk + 1) * m]);
            }
        }
    }
}

fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, xi) in out.iter_mut().zip(x) {
        *o += a * xi;
    }
}

fn relu(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = x.max(0.0);
    }
}

impl Embedder for LeanModel {
    fn source(&self) -> SourceKind {
        self.meta.source
    }

    fn embed(&self, rows: &[FeatureRow]) -> Result<Embeddings> {
        let enc = self.encoder.encode(rows)?;
        let n = enc.n;
        let h = self.hidden;
        let mut vectors = vec![0f32; n * EMBED_DIM];
        let t = TILE.min(n.max(1));
        let mut buf = Buffers {
            x: vec![0.0; t * h],
            a: vec![0.0; t * h],
            u: vec![0.0; t * h],
        };
        let nn = self.meta.numeric_mean.len();
        let mut r0 = 0;
        while r0 < n {
            let rows = t.min(n - r0);
            self.forward_tile(
                &enc.cats,
                n,
                r0,
                &enc.nums[r0 * nn..(r0 + rows) * nn],
                rows,
                &mut vectors[r0 * EMBED_DIM..(r0 + rows) * EMBED_DIM],
                &mut buf,
            );
            r0 += rows;
        }
        Ok(Embeddings {
            dim: EMBED_DIM,
            vectors,
            oov: enc.oov,
        })
    }
}
