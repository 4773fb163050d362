//! `rules test`: a module asked generated requests ([`super::generate`]), each decision held to
//! what the edge's books need of any rules, whatever else they decide. For each rule broken, how
//! often, and the simplest request that breaks it ([`super::shrink`]), with the decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cart_edge::asked::{Asked, Form};
use cart_edge::invariants::{INVARIANTS, broken};
use cart_edge::rules::CartRules;
use serde::Serialize;
use serde_json::{Value, json};

use super::generate::NOW;
use super::shrink;

/// One rule broken: how often, and the simplest request found that breaks it (as a case file
/// writes it) with the decision (as a case's `expect` would).
#[derive(Debug, Serialize)]
pub struct Broken {
    pub times: usize,
    pub request: Form,
    pub decided: Value,
}

/// What a run found.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    pub asked: usize,
    pub broken: BTreeMap<&'static str, Broken>,
}

impl Found {
    /// The report `rules test` prints.
    pub fn report(&self, module: &str) -> String {
        let mut s = format!("{module}: {} requests\n", self.asked);
        for (rule, what) in INVARIANTS {
            match self.broken.get(rule) {
                None => {
                    let _ = writeln!(s, "  ok      {rule}: {what}");
                }
                Some(b) => {
                    let times = match b.times {
                        1 => "once".to_owned(),
                        n => format!("{n} times"),
                    };
                    let request = serde_json::to_string(&b.request).unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  BROKEN  {rule}: {what} ({times}); the simplest request found:\n          \
                         request: {request}\n          decided: {}",
                        b.decided
                    );
                }
            }
        }
        s
    }

    /// The report as JSON: every rule, whether it held, and for a broken one what broke it.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = INVARIANTS
            .iter()
            .map(|(rule, what)| {
                let mut held = json!({"rule": rule, "what": what, "held": true});
                if let Some(b) = self.broken.get(rule) {
                    held["held"] = json!(false);
                    held["broken"] = json!(b);
                }
                held
            })
            .collect();
        json!({"asked": self.asked, "rules": rules})
    }
}

/// Asks `rules` each of `requests`, holds each decision to every rule, and shrinks the
/// simplest request found to break a rule to the simplest that still does.
pub fn test(rules: &dyn CartRules, requests: impl IntoIterator<Item = Asked>) -> Found {
    let mut asked_of = 0;
    // For each rule broken: how often, and the simplest request found that breaks it.
    let mut simplest: BTreeMap<&'static str, (usize, (usize, u64), Asked)> = BTreeMap::new();
    for asked in requests {
        asked_of += 1;
        for rule in broken(&asked, &asked.ask(rules)) {
            let weight = shrink::weight(&asked);
            let found = simplest
                .entry(rule)
                .or_insert_with(|| (0, weight, asked.clone()));
            found.0 += 1;
            if weight < found.1 {
                (found.1, found.2) = (weight, asked.clone());
            }
        }
    }
    let broken = simplest
        .into_iter()
        .map(|(rule, (times, _, asked))| {
            let asked = shrink::shrink(asked, |a| broken(a, &a.ask(rules)).contains(&rule));
            let found = Broken {
                times,
                request: asked.form(),
                decided: asked.ask(rules).json(NOW),
            };
            (rule, found)
        })
        .collect();
    Found {
        asked: asked_of,
        broken,
    }
}
