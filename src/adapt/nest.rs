//! Records nested in enclosing elements (`delivery.records = "/klienten/faelle"`): the open
//! enclosing elements (a client while its cases are read), the values of theirs that record
//! rules read with `../`, and the records that wait for such a value when it comes after them.
//!
//! Shared by the JSON, JSON Lines and XML engines, which stream: an enclosing element's own
//! members are held (they are small), its list of records never is. A record is mapped as soon
//! as every member its rules read in its enclosing elements has been seen; when an export puts
//! such a member after the list, the records of that one element wait until it arrives or the
//! element ends (docs/mapping-guide.md, "Nested exports").

use super::rules::{Assembler, RecordPlan, Repeat, unknown_fields, unknown_issue};
use super::{AdaptError, Issue};
use crate::catalogue::{Code, echo};
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// One open enclosing element.
struct Level {
    /// Its dotted source path with list indices (`klienten[3]`), for `W002`.
    path: String,
    /// Prefix of its messages (`line 7: ` in JSON Lines), else empty.
    note: String,
    /// The name of its list of records (or of enclosing elements) below it.
    child: String,
    /// Its members so far.
    map: Map<String, Value>,
    /// Members record rules read that have not come yet.
    waiting: Vec<String>,
    /// Records (or enclosing elements) found below it.
    children: usize,
}

/// A record waiting for a value of an enclosing element.
struct Pending {
    tree: Value,
    issues: Vec<Issue>,
    /// Copies of enclosing elements that ended while it waited (by level).
    frozen: Vec<Option<Map<String, Value>>>,
}

/// The enclosing elements of the record being read, outermost first.
pub(crate) struct Nest<'a> {
    plan: &'a RecordPlan,
    /// Levels of elements down to a record (1: records have no enclosing element).
    depth: usize,
    levels: Vec<Level>,
    pending: VecDeque<Pending>,
}

impl<'a> Nest<'a> {
    /// For records `depth` levels down (1 for a plain list of records).
    pub(crate) fn new(plan: &'a RecordPlan, depth: usize) -> Self {
        Nest {
            plan,
            depth: depth.max(1),
            levels: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Index into the plan's `ancestors_*` of level `l`.
    fn slot(&self, l: usize) -> usize {
        self.depth - 2 - l
    }

    /// An enclosing element starts: `path` names it for messages, `child` is the list below it.
    pub(crate) fn open(&mut self, path: String, note: String, child: &str) {
        if let Some(parent) = self.levels.last_mut() {
            parent.children += 1;
        }
        let l = self.levels.len();
        let waiting = self
            .plan
            .ancestors_members
            .get(self.slot(l))
            .cloned()
            .unwrap_or_default();
        self.levels.push(Level {
            path,
            note,
            child: child.to_string(),
            map: Map::new(),
            waiting,
            children: 0,
        });
    }

    /// Whether any rule (or informational path) knows this member of the innermost open element.
    pub(crate) fn knows(&self, key: &str) -> bool {
        let l = self.levels.len().saturating_sub(1);
        self.plan
            .ancestors_known
            .get(self.slot(l))
            .is_some_and(|k| k.children.contains_key(key))
    }

    /// The innermost open element's dotted path and message prefix.
    pub(crate) fn path(&self) -> (&str, &str) {
        self.levels
            .last()
            .map(|l| (l.path.as_str(), l.note.as_str()))
            .unwrap_or(("", ""))
    }

    /// A member of the innermost open element.
    pub(crate) fn member(
        &mut self,
        asm: &mut Assembler,
        key: String,
        value: Value,
        repeat: Repeat,
    ) -> Result<(), AdaptError> {
        let Some(level) = self.levels.last_mut() else {
            return Ok(());
        };
        match (repeat, level.map.get_mut(&key)) {
            (Repeat::Collect, Some(Value::Array(a))) => a.push(value),
            (Repeat::Collect, Some(existing)) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, value]);
            }
            _ => {
                level.map.insert(key.clone(), value);
            }
        }
        level.waiting.retain(|m| *m != key);
        self.flush(asm)
    }

    fn blocked(&self) -> bool {
        self.levels.iter().any(|l| !l.waiting.is_empty())
    }

    /// One record (in document order).
    pub(crate) fn record(
        &mut self,
        asm: &mut Assembler,
        tree: Value,
        issues: Vec<Issue>,
    ) -> Result<(), AdaptError> {
        if let Some(level) = self.levels.last_mut() {
            level.children += 1;
        }
        if self.blocked() || !self.pending.is_empty() {
            self.pending.push_back(Pending {
                tree,
                issues,
                frozen: vec![None; self.levels.len()],
            });
            return Ok(());
        }
        let ancestors: Vec<&Map<String, Value>> = self.levels.iter().map(|l| &l.map).collect();
        asm.record_in(tree, &ancestors, issues)
    }

    fn flush(&mut self, asm: &mut Assembler) -> Result<(), AdaptError> {
        if self.blocked() {
            return Ok(());
        }
        while let Some(p) = self.pending.pop_front() {
            let ancestors: Vec<&Map<String, Value>> = p
                .frozen
                .iter()
                .enumerate()
                .map(|(l, f)| match f {
                    Some(frozen) => frozen,
                    None => &self.levels[l].map,
                })
                .collect();
            asm.record_in(p.tree, &ancestors, p.issues)?;
        }
        Ok(())
    }

    /// The innermost open element ends: its members no rule reads are reported (`W002`, with
    /// record `null`), and so is an element without records below it; records that waited for
    /// it are mapped.
    pub(crate) fn close(&mut self, asm: &mut Assembler) -> Result<(), AdaptError> {
        let l = self.levels.len() - 1;
        let slot = self.slot(l);
        let Some(mut level) = self.levels.pop() else {
            return Ok(());
        };
        if let Some(known) = self.plan.ancestors_known.get(slot) {
            let mut unknown = Vec::new();
            unknown_fields(&level.map, known, &level.path, &mut unknown);
            for (path, key) in unknown {
                let mut issue = unknown_issue(path, &key);
                issue.message = format!("{}{}", level.note, issue.message);
                asm.sink.warning(issue);
            }
        }
        if level.children == 0 {
            let name = if level.path.is_empty() {
                "the line".to_string()
            } else {
                format!("'{}'", echo(&level.path))
            };
            asm.sink.warning(Issue::new(
                Code::W002,
                if level.path.is_empty() {
                    level.child.clone()
                } else {
                    level.path.clone()
                },
                format!(
                    "{}{name} holds no record ('{}' is missing or empty): its values are in no record",
                    level.note,
                    echo(&level.child)
                ),
            ));
        }
        level.waiting.clear();
        if !self.pending.is_empty() {
            for p in &mut self.pending {
                if let Some(slot) = p.frozen.get_mut(l)
                    && slot.is_none()
                {
                    *slot = Some(level.map.clone());
                }
            }
        }
        self.levels.push(level);
        // Map what waited while the element's values are still in place.
        let result = self.flush(asm);
        self.levels.pop();
        result
    }

    /// The document ended: records still waiting are mapped with what there is.
    pub(crate) fn finish(&mut self, asm: &mut Assembler) -> Result<(), AdaptError> {
        while !self.levels.is_empty() {
            self.close(asm)?;
        }
        self.flush(asm)
    }
}
