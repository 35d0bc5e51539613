//! AIP-160 filter expressions as a typed tree: comparisons joined by `AND` and `OR`, negated
//! with `NOT`, grouped with parentheses.
//!
//! As AIP-160 says, `OR` binds tighter than `AND`: `a = 1 AND b = 2 OR c = 3` is
//! `a = 1 AND (b = 2 OR c = 3)`. Juxtaposition without an operator is refused rather than
//! guessed at. Every error names the character where the filter went wrong. A hostile filter
//! cannot exhaust the stack or the CPU: its length, nesting and number of comparisons are
//! bounded. A service walks the [`Expr`] and binds each value as a query parameter; no filter
//! text ever becomes SQL text.

use super::{tokenize, AipError, Comparison, Op, Tok, Value};

/// The longest filter accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// How deeply parentheses and `NOT` may nest.
pub const MAX_DEPTH: usize = 16;
/// How many comparisons one filter may hold.
pub const MAX_COMPARISONS: usize = 64;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every part holds.
    And(Vec<Expr>),
    /// At least one part holds.
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// A comparison, with where it starts in the filter (for errors a service raises about
    /// its field or value).
    Compare {
        at: usize,
        comparison: Comparison,
    },
}

impl Expr {
    /// Every comparison in the tree, in the order written.
    pub fn comparisons(&self) -> Vec<(usize, &Comparison)> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<(usize, &'a Comparison)>) {
        match self {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().for_each(|p| p.collect(out)),
            Expr::Not(inner) => inner.collect(out),
            Expr::Compare { at, comparison } => out.push((*at, comparison)),
        }
    }
}

/// Parses a filter; an empty one is `None` (everything matches).
pub fn parse_expr(input: &str) -> Result<Option<Expr>, AipError> {
    if input.len() > MAX_LEN {
        return Err(AipError::Filter {
            at: MAX_LEN,
            reason: format!("a filter is at most {MAX_LEN} bytes long"),
        });
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
        end: input.len(),
        comparisons: 0,
    };
    let expr = parser.expression(0)?;
    if let Some((at, _)) = parser.peek() {
        return Err(AipError::Filter {
            at,
            reason: "expected AND or OR here".into(),
        });
    }
    Ok(Some(expr))
}

struct Parser<'a> {
    tokens: &'a [(usize, Tok)],
    next: usize,
    end: usize,
    comparisons: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<(usize, &Tok)> {
        self.tokens.get(self.next).map(|(at, t)| (*at, t))
    }

    fn here(&self) -> usize {
        self.peek().map(|(at, _)| at).unwrap_or(self.end)
    }

    fn error(&self, at: usize, reason: impl Into<String>) -> AipError {
        AipError::Filter {
            at,
            reason: reason.into(),
        }
    }

    fn nested(&self, depth: usize) -> Result<usize, AipError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(
                self.here(),
                format!("parentheses and NOT nest at most {MAX_DEPTH} deep"),
            ));
        }
        Ok(depth + 1)
    }

    /// expression := factor ("AND" factor)*
    fn expression(&mut self, depth: usize) -> Result<Expr, AipError> {
        let mut parts = vec![self.factor(depth)?];
        while matches!(self.peek(), Some((_, Tok::And))) {
            self.next += 1;
            parts.push(self.factor(depth)?);
        }
        Ok(one_or(parts, Expr::And))
    }

    /// factor := term ("OR" term)*
    fn factor(&mut self, depth: usize) -> Result<Expr, AipError> {
        let mut parts = vec![self.term(depth)?];
        while matches!(self.peek(), Some((_, Tok::Or))) {
            self.next += 1;
            parts.push(self.term(depth)?);
        }
        Ok(one_or(parts, Expr::Or))
    }

    /// term := "NOT" term | "(" expression ")" | comparison
    fn term(&mut self, depth: usize) -> Result<Expr, AipError> {
        match self.peek() {
            Some((_, Tok::Not)) => {
                self.next += 1;
                let depth = self.nested(depth)?;
                Ok(Expr::Not(Box::new(self.term(depth)?)))
            }
            Some((open, Tok::Open)) => {
                self.next += 1;
                let depth = self.nested(depth)?;
                let inner = self.expression(depth)?;
                match self.peek() {
                    Some((_, Tok::Close)) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(self.error(
                        self.here(),
                        format!("the parenthesis opened at character {open} is not closed"),
                    )),
                }
            }
            Some((at, Tok::Word(_))) => self.comparison(at),
            Some((at, Tok::Close)) => Err(self.error(at, "`)` closes nothing")),
            Some((at, Tok::And | Tok::Or)) => {
                Err(self.error(at, "expected a comparison before AND/OR"))
            }
            Some((at, _)) => Err(self.error(at, "expected a field name")),
            None => Err(self.error(self.end, "the filter ends where a comparison should be")),
        }
    }

    /// comparison := field op value
    fn comparison(&mut self, at: usize) -> Result<Expr, AipError> {
        let Some((_, Tok::Word(field))) = self.peek() else {
            return Err(self.error(at, "expected a field name"));
        };
        let field = field.clone();
        if !is_field_name(&field) {
            return Err(self.error(
                at,
                format!("`{}` is not a field name", crate::shown(&field)),
            ));
        }
        self.next += 1;
        let op = match self.peek() {
            Some((_, Tok::Op(op))) => *op,
            _ => {
                return Err(self.error(
                    self.here(),
                    format!(
                        "expected an operator (=, !=, <, <=, >, >=, :) after `{}`",
                        crate::shown(&field)
                    ),
                ))
            }
        };
        self.next += 1;
        let value = match self.peek() {
            Some((_, Tok::Str(s))) => Value::Text(s.clone()),
            Some((_, Tok::Word(w))) => word_value(w),
            _ => {
                return Err(self.error(
                    self.here(),
                    format!(
                        "expected a value after `{} {}`",
                        crate::shown(&field),
                        op_text(op)
                    ),
                ))
            }
        };
        self.next += 1;
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(self.error(
                at,
                format!("a filter holds at most {MAX_COMPARISONS} comparisons"),
            ));
        }
        Ok(Expr::Compare {
            at,
            comparison: Comparison { field, op, value },
        })
    }
}

fn one_or(mut parts: Vec<Expr>, many: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        many(parts)
    }
}

/// `true`, `false`, a number, or a bare word (an enum name, say).
pub(super) fn word_value(w: &str) -> Value {
    match w {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match w.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::Number(n),
            _ => Value::Word(w.to_owned()),
        },
    }
}

fn is_field_name(w: &str) -> bool {
    let mut chars = w.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Has => ":",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: Op, value: Value) -> Comparison {
        Comparison {
            field: field.into(),
            op,
            value,
        }
    }

    fn shape(e: &Expr) -> String {
        match e {
            Expr::And(p) => format!("and({})", p.iter().map(shape).collect::<Vec<_>>().join(",")),
            Expr::Or(p) => format!("or({})", p.iter().map(shape).collect::<Vec<_>>().join(",")),
            Expr::Not(i) => format!("not({})", shape(i)),
            Expr::Compare { comparison, .. } => comparison.field.clone(),
        }
    }

    #[test]
    fn or_binds_tighter_than_and_and_parentheses_group() {
        let e = parse_expr("a = 1 AND b = 2 OR c = 3").unwrap().unwrap();
        assert_eq!(shape(&e), "and(a,or(b,c))");
        let e = parse_expr("(a = 1 AND b = 2) OR NOT c = 3")
            .unwrap()
            .unwrap();
        assert_eq!(shape(&e), "or(and(a,b),not(c))");
        let e = parse_expr(r#"owner.last_name : "lee" AND in_crm = true"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            e.comparisons()
                .into_iter()
                .map(|(_, c)| c.clone())
                .collect::<Vec<_>>(),
            vec![
                cmp("owner.last_name", Op::Has, Value::Text("lee".into())),
                cmp("in_crm", Op::Eq, Value::Bool(true)),
            ]
        );
        assert_eq!(parse_expr("   ").unwrap(), None);
    }

    #[test]
    fn errors_name_the_character_where_the_filter_went_wrong() {
        for (filter, at) in [
            ("a = 1 b = 2", 6),
            ("(a = 1", 6),
            ("a = 1 )", 6),
            ("a = ", 4),
            ("NOT", 3),
            ("a = 1 AND", 9),
            ("OR a = 1", 0),
            ("a = 1 AND AND b = 2", 10),
            ("1a = 2", 0),
        ] {
            match parse_expr(filter) {
                Err(AipError::Filter { at: got, .. }) => assert_eq!(got, at, "{filter}"),
                other => panic!("{filter}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_filters_are_bounded() {
        let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(parse_expr(&deep), Err(AipError::Filter { .. })));
        let nots = format!("{}a = 1", "NOT ".repeat(200));
        assert!(matches!(parse_expr(&nots), Err(AipError::Filter { .. })));
        let many = vec!["a = 1"; 100].join(" OR ");
        assert!(matches!(parse_expr(&many), Err(AipError::Filter { .. })));
        let long = "a".repeat(MAX_LEN + 1);
        assert!(matches!(parse_expr(&long), Err(AipError::Filter { .. })));
    }

    #[test]
    fn random_input_never_panics_and_errors_point_inside_it() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "a", "b.c", " ", "=", "!=", "<", "<=", ">", ">=", ":", "AND", "OR", "NOT", "(", ")",
            "\"x y\"", "'q", "\\", "1", "-2.5", "true", "é", "\u{200b}", "!", "\"",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(160);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..24);
            let filter: String = (0..n)
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect::<Vec<_>>()
                .join(if rng.gen_bool(0.5) { " " } else { "" });
            match parse_expr(&filter) {
                Ok(_) => {}
                Err(AipError::Filter { at, .. }) => assert!(at <= filter.len(), "{filter:?}"),
                Err(other) => panic!("{filter:?}: {other:?}"),
            }
        }
    }
}
