//! A streaming int8 interpreter for the operators microWakeWord models use.
//! Loading (`plan`) checks every operator and turns it into a step with its
//! multipliers and shapes worked out, so an inference only runs the steps
//! over buffers made once: no allocation. The streaming state lives in
//! resource variables (the models' `VAR_HANDLE`/`READ_VARIABLE`/
//! `ASSIGN_VARIABLE`), set to their start values by the `CALL_ONCE`
//! initialisation subgraph.

use crate::ops::{Conv, FullyConnected, Requantize};
use crate::plan::Builder;
use crate::tflite::{self, ty};

/// The most values all tensors together may hold: the microWakeWord models
/// have a few tens of thousands; a damaged shape must not allocate gigabytes.
const MAX_ELEMENTS: usize = 1 << 22;

/// The most dimensions a sliced tensor may have.
pub(crate) const MAX_RANK: usize = 6;

pub(crate) enum Step {
    Copy {
        from: usize,
        to: usize,
    },
    Read {
        var: usize,
        to: usize,
    },
    Assign {
        var: usize,
        from: usize,
    },
    /// Concatenation (or split): for each of `outer` blocks, consecutive
    /// chunks move between the one side and the many.
    Concat {
        parts: Vec<(usize, usize)>,
        outer: usize,
        whole: usize,
    },
    Split {
        parts: Vec<(usize, usize)>,
        outer: usize,
        whole: usize,
    },
    Slice {
        from: usize,
        to: usize,
        dims: Vec<(i64, i64, usize)>,
        strides: Vec<usize>,
    },
    Conv {
        input: usize,
        filter: usize,
        to: usize,
        op: Conv,
    },
    FullyConnected {
        input: usize,
        filter: usize,
        to: usize,
        op: FullyConnected,
    },
    Table {
        from: usize,
        to: usize,
        table: Box<[u8; 256]>,
    },
    Requantize {
        from: usize,
        to: usize,
        op: Requantize,
    },
}

/// A loaded model, ready to run one inference at a time.
pub struct Graph {
    data: Vec<Vec<i8>>,
    vars: Vec<Vec<i8>>,
    start: Vec<Vec<i8>>,
    steps: Vec<Step>,
    input: usize,
    output: usize,
    input_shape: Vec<usize>,
    input_quant: (f32, i32),
    output_quant: (f32, i32, bool),
}

type Result<T> = std::result::Result<T, String>;

impl Graph {
    /// Builds the interpreter for a `.tflite` file's bytes; errors say what
    /// in the file is wrong or not supported.
    pub fn load(bytes: &[u8]) -> Result<Graph> {
        let model = tflite::parse(bytes)?;
        let main = model.subgraphs.first().ok_or("it has no subgraphs")?;
        let [input] = main.inputs[..] else {
            return Err("the model must have exactly one input".into());
        };
        let [output] = main.outputs[..] else {
            return Err("the model must have exactly one output".into());
        };
        let mut b = Builder::new(&model);
        let mut data = Vec::new();
        let mut total = 0usize;
        for t in &main.tensors {
            let c = model.buffers.get(t.buffer).filter(|d| !d.is_empty());
            let n = t.len();
            total = total.saturating_add(n);
            if total > MAX_ELEMENTS {
                return Err(format!(
                    "tensor {} makes the model larger than {MAX_ELEMENTS} values",
                    t.name
                ));
            }
            if let Some(d) = c {
                let width = if t.ty == ty::INT32 { 4 } else { 1 };
                if d.len() != n.saturating_mul(width) {
                    return Err(format!(
                        "tensor {} has {} bytes of data for {n} values",
                        t.name,
                        d.len()
                    ));
                }
            }
            data.push(match (c, t.ty) {
                (Some(d), ty::INT8 | ty::UINT8) => d.iter().map(|&x| x as i8).collect(),
                (None, ty::INT8 | ty::UINT8) => vec![0; n],
                _ => Vec::new(),
            });
        }
        let mut steps = Vec::new();
        for (i, op) in main.operators.iter().enumerate() {
            let name = |t: &[i32]| {
                t.first()
                    .and_then(|&t| main.tensors.get(t as usize))
                    .map_or("", |t| &t.name)
            };
            let step = b
                .step(op)
                .map_err(|e| format!("operator {i} ({}): {e}", name(&op.outputs)))?;
            steps.extend(step);
        }
        let input = input as usize;
        let output = output as usize;
        let it = b.tensor(input as i32)?;
        let ot = b.tensor(output as i32)?;
        if it.ty != ty::INT8 || !matches!(ot.ty, ty::INT8 | ty::UINT8) || ot.len() == 0 {
            return Err("the model's input must be int8 and its output int8 or uint8".into());
        }
        let vars = b.start.clone();
        Ok(Graph {
            data,
            start: b.start,
            vars,
            steps,
            input,
            output,
            input_shape: it.shape.iter().map(|&d| d.max(0) as usize).collect(),
            input_quant: it.quant(),
            output_quant: (ot.quant().0, ot.quant().1, ot.ty == ty::UINT8),
        })
    }

    /// The input's shape (for microWakeWord: 1, frames per call, features).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The input's scale and zero point.
    pub fn input_quant(&self) -> (f32, i32) {
        self.input_quant
    }

    /// The current values of tensor `index` of the main subgraph (empty for
    /// constants other than 8-bit ones): for comparing with another runtime.
    pub fn tensor(&self, index: usize) -> &[i8] {
        self.data.get(index).map_or(&[], |d| &d[..])
    }

    /// The input buffer to fill before [`Graph::invoke`].
    pub fn input_mut(&mut self) -> &mut [i8] {
        &mut self.data[self.input]
    }

    /// Puts the streaming state back to its start values.
    pub fn reset(&mut self) {
        for (v, s) in self.vars.iter_mut().zip(&self.start) {
            v.copy_from_slice(s);
        }
    }

    /// Runs the model once and returns its (first) output, dequantized.
    pub fn invoke(&mut self) -> f32 {
        for step in &self.steps {
            run(step, &mut self.data, &mut self.vars);
        }
        let (scale, zp, unsigned) = self.output_quant;
        let raw = self.data[self.output][0];
        let q = if unsigned {
            raw as u8 as i32
        } else {
            raw as i32
        };
        (q - zp) as f32 * scale
    }
}

/// A step's work: read the other tensors, write its output.
type Kernel<'a> = dyn Fn(&[Vec<i8>], &mut [i8]) + 'a;

fn run(step: &Step, data: &mut [Vec<i8>], vars: &mut [Vec<i8>]) {
    // Each step writes one tensor that none of its inputs is: take it out
    // while reading the others, then put it back (no copy, no allocation).
    let with_out = |data: &mut [Vec<i8>], to: usize, f: &Kernel<'_>| {
        let mut out = std::mem::take(&mut data[to]);
        f(data, &mut out);
        data[to] = out;
    };
    match step {
        Step::Copy { from, to } => with_out(data, *to, &|d, o| o.copy_from_slice(&d[*from])),
        Step::Read { var, to } => data[*to].copy_from_slice(&vars[*var]),
        Step::Assign { var, from } => vars[*var].copy_from_slice(&data[*from]),
        Step::Concat {
            parts,
            outer,
            whole,
        } => with_out(data, *whole, &|d, o| {
            let mut at = 0;
            for block in 0..*outer {
                for &(t, chunk) in parts {
                    o[at..at + chunk].copy_from_slice(&d[t][block * chunk..][..chunk]);
                    at += chunk;
                }
            }
        }),
        Step::Split {
            parts,
            outer,
            whole,
        } => {
            let mut at = 0;
            for block in 0..*outer {
                for &(t, chunk) in parts {
                    let (src, dst) = two(data, *whole, t);
                    dst[block * chunk..][..chunk].copy_from_slice(&src[at..at + chunk]);
                    at += chunk;
                }
            }
        }
        Step::Slice {
            from,
            to,
            dims,
            strides,
        } => with_out(data, *to, &|d, o| {
            let src = &d[*from];
            let mut idx = [0usize; MAX_RANK];
            for out in o.iter_mut() {
                let mut at = 0i64;
                for (k, &(start, stride, _)) in dims.iter().enumerate() {
                    at += (start + stride * idx[k] as i64) * strides[k] as i64;
                }
                *out = src[at as usize];
                for k in (0..dims.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < dims[k].2 {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }),
        Step::Conv {
            input,
            filter,
            to,
            op,
        } => with_out(data, *to, &|d, o| op.run(&d[*input], &d[*filter], o)),
        Step::FullyConnected {
            input,
            filter,
            to,
            op,
        } => with_out(data, *to, &|d, o| op.run(&d[*input], &d[*filter], o)),
        Step::Table { from, to, table } => with_out(data, *to, &|d, o| {
            for (o, &x) in o.iter_mut().zip(&d[*from]) {
                *o = table[x as u8 as usize] as i8;
            }
        }),
        Step::Requantize { from, to, op } => with_out(data, *to, &|d, o| op.run(&d[*from], o)),
    }
}

/// Two distinct tensors, one to read and one to write.
fn two(data: &mut [Vec<i8>], read: usize, write: usize) -> (&[i8], &mut [i8]) {
    if read < write {
        let (a, b) = data.split_at_mut(write);
        (&a[read], &mut b[0])
    } else {
        let (a, b) = data.split_at_mut(read);
        (&b[0], &mut a[write])
    }
}
