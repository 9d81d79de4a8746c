//! Command-line pieces the bench binaries share.

/// A clap value parser for a number of seconds in (0, `max`].
pub fn seconds(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |v: &str| match v.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= max => Ok(x),
        _ => Err(format!("'{v}' is not a number of seconds in (0, {max}]")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_in_range() {
        let p = super::seconds(600.0);
        assert_eq!(p("0.25"), Ok(0.25));
        assert_eq!(p("600"), Ok(600.0));
        for bad in ["0", "-1", "601", "NaN", "inf", "soon"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
