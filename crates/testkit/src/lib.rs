//! `attrib-testkit` is the property-test kit of attrib: what a researcher adding an
//! attribution method runs it through, in their own crate, with one call. It has
//! proptest strategies for random networks (convolutions, batch norm, ReLU and
//! ReLU6, max-pool, a residual block; [`strategies`]), inputs and targets; the
//! functionally equal and shifted twins of a network ([`nets`]); and the properties
//! of the attribution literature ([`Property`]), each evaluated over many random
//! cases and reported as holds, fails (with the case) or a measured number:
//!
//! ```no_run
//! use attrib_testkit::{Kit, Property};
//!
//! let report = Kit::new().run("gradient", &attrib_methods::Gradient);
//! println!("{}", report.markdown());
//! report.assert_holds(&[Property::BatchEqualsItems, Property::LinearInSeed]);
//! ```
//!
//! The identities between the Grad-CAM paper's methods (Grad-CAM = ReLU(CAM)/Z,
//! Guided Grad-CAM = product, saliency = max |gradient|, deconvnet's input
//! independence) run over the same cases with [`Kit::identities`].

pub mod nets;
pub mod properties;
pub mod strategies;

use attrib_core::{Attribution, Target};
use attrib_dfdx::Network;
use attrib_methods::invariants;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

pub use nets::{NetSpec, Variant};
pub use properties::{evaluate, Outcome, Property};
pub use strategies::Case;

/// How many random cases, from which seed.
#[derive(Debug, Clone, Copy)]
pub struct Kit {
    cases: usize,
    seed: u64,
    max_batch: usize,
}

impl Default for Kit {
    fn default() -> Self {
        Kit {
            cases: 16,
            seed: 0,
            max_batch: 3,
        }
    }
}

impl Kit {
    /// 16 cases from seed 0, batches of up to 3.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `n` cases.
    pub fn cases(mut self, n: usize) -> Self {
        self.cases = n.max(1);
        self
    }

    /// Draws the cases from `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The random cases (the same for the same seed and count).
    pub fn draw(&self) -> Vec<Case> {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&self.seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
        );
        let strategy = strategies::case(self.max_batch);
        (0..self.cases)
            .filter_map(|_| strategy.new_tree(&mut runner).ok().map(|t| t.current()))
            .collect()
    }

    /// Every property of `method` (called `name` in the report) over the cases.
    pub fn run<A: Attribution<f64, Network<f64>> + ?Sized>(
        &self,
        name: &str,
        method: &A,
    ) -> Report {
        let cases = self.draw();
        let rows = Property::ALL
            .iter()
            .map(|&p| {
                (
                    p,
                    aggregate(p, cases.iter().map(|c| evaluate(p, method, c))),
                )
            })
            .collect();
        Report {
            method: name.to_string(),
            rows,
        }
    }

    /// The identities between the paper's methods over the cases: name and outcome.
    pub fn identities(&self) -> Vec<(&'static str, Outcome)> {
        let cases = self.draw();
        type Check = fn(&Network<f64>, &Case) -> attrib_core::Result<Option<invariants::Check>>;
        let checks: [(&'static str, Check); 5] = [
            ("Grad-CAM = ReLU(CAM) / Z (Selvaraju et al.)", |n, c| {
                invariants::grad_cam_is_relu_cam_over_z(n, c.input.view(), &c.target).map(Some)
            }),
            ("mean CAM = score - bias (Zhou et al.)", |n, c| {
                invariants::cam_mean_is_score_minus_bias(n, c.input.view(), &c.target).map(Some)
            }),
            (
                "Guided Grad-CAM = guided backprop x up(Grad-CAM)",
                |n, c| {
                    invariants::guided_grad_cam_is_product(
                        n,
                        c.input.view(),
                        &c.target,
                        &attrib_methods::GradCam::new(),
                    )
                    .map(Some)
                },
            ),
            (
                "saliency = max_c abs(gradient) (Simonyan et al.)",
                |n, c| {
                    invariants::saliency_is_max_abs_gradient(n, c.input.view(), &c.target).map(Some)
                },
            ),
            (
                "deconvnet ignores the input without max-pool (Mahendran & Vedaldi)",
                |n, c| {
                    if c.spec.max_pool {
                        return Ok(None);
                    }
                    let other = c.input.mapv(|v| 0.5 - v);
                    let k = c.spec.classes;
                    let seed = ndarray::Array2::from_shape_fn((c.input.dim().0, k), |(i, j)| {
                        if (i + j) % 2 == 0 {
                            1.0
                        } else {
                            -0.5
                        }
                    });
                    invariants::deconvnet_ignores_input(n, c.input.view(), other.view(), &seed)
                        .map(Some)
                },
            ),
        ];
        checks
            .iter()
            .map(|(name, f)| {
                let outcomes = cases.iter().filter_map(|c| {
                    let r = c.spec.build::<f64>().and_then(|net| f(&net, c));
                    match r {
                        Ok(None) => None,
                        Ok(Some(check)) => Some(if check.holds(properties::RTOL, 1e-12) {
                            Outcome::Holds {
                                worst: check.relative(),
                            }
                        } else {
                            Outcome::Fails {
                                worst: check.relative(),
                                case: properties::describe(c),
                            }
                        }),
                        Err(e) => Some(Outcome::Errored(e.to_string())),
                    }
                });
                (*name, aggregate(Property::BatchEqualsItems, outcomes))
            })
            .collect()
    }
}

/// All cases' outcomes of `p` as one: the first error or failure, else the worst
/// holding difference; of a measure, the worst completeness gap, or the mean
/// correlation (randomisation passing when its mean does).
fn aggregate(p: Property, outcomes: impl Iterator<Item = Outcome>) -> Outcome {
    let mut worst = 0.0f64;
    let mut measured = Vec::new();
    let mut bar = None;
    let mut na = None;
    for o in outcomes {
        match o {
            Outcome::Holds { worst: w } => worst = worst.max(w),
            Outcome::Fails { .. } | Outcome::Errored(_) => return o,
            Outcome::Measured { value, passes } => {
                measured.push(value);
                bar = bar.or(passes.map(|_| ()));
            }
            Outcome::NotApplicable(why) => na = Some(why),
        }
    }
    if let Some(why) = na {
        return Outcome::NotApplicable(why);
    }
    if !measured.is_empty() {
        if p == Property::Completeness {
            let value = measured.iter().fold(0.0f64, |m, v| m.max(*v));
            return Outcome::Measured {
                value,
                passes: Some(value <= properties::COMPLETENESS_RTOL),
            };
        }
        let value = measured.iter().sum::<f64>() / measured.len() as f64;
        return Outcome::Measured {
            value,
            passes: bar.map(|_| value < properties::RANDOMISATION_MAX_RHO),
        };
    }
    Outcome::Holds { worst }
}

/// What the kit found for one method.
#[derive(Debug, Clone)]
pub struct Report {
    /// The method's name.
    pub method: String,
    /// Every property's outcome, in [`Property::ALL`]'s order.
    pub rows: Vec<(Property, Outcome)>,
}

impl Report {
    /// The outcome of `p`.
    pub fn outcome(&self, p: Property) -> &Outcome {
        &self
            .rows
            .iter()
            .find(|(q, _)| *q == p)
            .expect("every property is reported")
            .1
    }

    /// The properties that do not hold (or whose measure fails its bar, or that
    /// errored), with a line each.
    pub fn failures(&self, props: &[Property]) -> Vec<String> {
        props
            .iter()
            .filter_map(|&p| match self.outcome(p) {
                Outcome::Holds { .. }
                | Outcome::Measured {
                    passes: None | Some(true),
                    ..
                } => None,
                o => Some(format!("{}: {} {o:?}", self.method, p.short())),
            })
            .collect()
    }

    /// Panics, listing them, unless every property in `props` holds: for a method
    /// author's test.
    pub fn assert_holds(&self, props: &[Property]) {
        let f = self.failures(props);
        assert!(
            f.is_empty(),
            "properties that do not hold:\n{}",
            f.join("\n")
        );
    }

    /// One markdown row: `yes`, `no`, `n/a`, `error`, or the measure.
    pub fn markdown_row(&self) -> String {
        let cells: Vec<String> = self.rows.iter().map(|(_, o)| cell(o)).collect();
        format!("| {} | {} |", self.method, cells.join(" | "))
    }

    /// A one-row table with its header.
    pub fn markdown(&self) -> String {
        markdown_table(std::slice::from_ref(self))
    }
}

fn cell(o: &Outcome) -> String {
    match o {
        Outcome::Holds { .. } => "yes".into(),
        Outcome::Fails { .. } => "no".into(),
        Outcome::Measured {
            value,
            passes: None,
        } => format!("{value:.2}"),
        Outcome::Measured {
            value,
            passes: Some(p),
        } => {
            format!("{value:.2} ({})", if *p { "yes" } else { "no" })
        }
        Outcome::NotApplicable(_) => "n/a".into(),
        Outcome::Errored(_) => "error".into(),
    }
}

/// The table of several reports.
pub fn markdown_table(reports: &[Report]) -> String {
    let header: Vec<&str> = Property::ALL.iter().map(|p| p.short()).collect();
    let mut out = format!(
        "| method | {} |\n|---|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in reports {
        out.push_str(&r.markdown_row());
        out.push('\n');
    }
    out
}

/// The targets a kit case uses, for a method author's own checks.
pub fn targets(classes: usize, n: usize) -> Vec<Target<f64>> {
    vec![
        Target::Class(0),
        Target::PerSample((0..n).map(|i| i % classes).collect()),
        Target::TopPredicted,
    ]
}
