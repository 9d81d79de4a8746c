//! Per-tunnel text templates: `{n}` placeholders with simple integer
//! arithmetic, e.g. `user{n}@test` or `10.128.{n/256}.{n%256}/32`.
//!
//! An expression is `n` followed by any number of `+ - * / %` operations with
//! non-negative integer constants, evaluated left to right (`{n/256%256}`).

use thiserror::Error;

/// A template that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("template '{0}': unclosed '{{'")]
    Unclosed(String),
    /// The text between braces is not a valid expression.
    #[error("template '{template}': bad expression '{{{expr}}}': {why}")]
    BadExpression {
        /// The whole template.
        template: String,
        /// The expression inside the braces.
        expr: String,
        /// What is wrong with it.
        why: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Vec<(Op, u64)>),
}

/// A parsed template; [`Template::render`] fills in a tunnel index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `s`; text without braces is a constant template.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| TemplateError::Unclosed(s.to_string()))?;
            let expr = &after[..close];
            let ops = parse_expr(expr).map_err(|why| TemplateError::BadExpression {
                template: s.to_string(),
                expr: expr.to_string(),
                why,
            })?;
            parts.push(Part::Expr(ops));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            source: s.to_string(),
            parts,
        })
    }

    /// True if the template has at least one `{n}` placeholder.
    pub fn is_per_tunnel(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Expr(_)))
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text for tunnel `n`. Arithmetic wraps; division by zero was rejected at parse time.
    pub fn render(&self, n: u64) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr(ops) => {
                    let mut v = n;
                    for (op, k) in ops {
                        v = match op {
                            Op::Add => v.wrapping_add(*k),
                            Op::Sub => v.wrapping_sub(*k),
                            Op::Mul => v.wrapping_mul(*k),
                            Op::Div => v / k,
                            Op::Rem => v % k,
                        };
                    }
                    out.push_str(&v.to_string());
                }
            }
        }
        out
    }
}

fn parse_expr(expr: &str) -> Result<Vec<(Op, u64)>, String> {
    let e: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let mut rest = e.strip_prefix('n').ok_or_else(|| "must start with 'n'".to_string())?;
    let mut ops = Vec::new();
    while let Some(c) = rest.chars().next() {
        let op = match c {
            '+' => Op::Add,
            '-' => Op::Sub,
            '*' => Op::Mul,
            '/' => Op::Div,
            '%' => Op::Rem,
            other => return Err(format!("unexpected '{other}'")),
        };
        rest = &rest[1..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("'{c}' must be followed by a number"));
        }
        let k: u64 = rest[..digits].parse().map_err(|e| format!("{e}"))?;
        if matches!(op, Op::Div | Op::Rem) && k == 0 {
            return Err("division by zero".into());
        }
        ops.push((op, k));
        rest = &rest[digits..];
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = Template::parse("10.128.{n/256}.{n%256}/32").unwrap();
        assert!(t.is_per_tunnel());
        assert_eq!(t.render(0), "10.128.0.0/32");
        assert_eq!(t.render(513), "10.128.2.1/32");
        assert_eq!(Template::parse("user{n}@test").unwrap().render(7), "user7@test");
        assert_eq!(
            Template::parse("{n / 256 % 256}.{ n + 1 }")
                .unwrap()
                .render(65536 + 256),
            "1.65793"
        );
    }

    #[test]
    fn constant_template() {
        let t = Template::parse("gw@test").unwrap();
        assert!(!t.is_per_tunnel());
        assert_eq!(t.render(99), "gw@test");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(Template::parse("a{n"), Err(TemplateError::Unclosed(_))));
        assert!(matches!(
            Template::parse("{m}"),
            Err(TemplateError::BadExpression { .. })
        ));
        assert!(matches!(
            Template::parse("{n/0}"),
            Err(TemplateError::BadExpression { .. })
        ));
        assert!(matches!(
            Template::parse("{n+}"),
            Err(TemplateError::BadExpression { .. })
        ));
        assert!(matches!(
            Template::parse("{n^2}"),
            Err(TemplateError::BadExpression { .. })
        ));
    }
}
