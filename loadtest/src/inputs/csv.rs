//! `.csv` input data: one row per item, values separated by commas (numbers; blank lines
//! skipped). A first line with any non-numeric field is a header and is skipped.

use anyhow::{Context, ensure};

/// The numeric rows of `text`.
pub fn parse(text: &str) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Result<Vec<f64>, _> =
            line.split(',').map(|f| f.trim().parse::<f64>()).collect();
        match fields {
            Ok(row) => rows.push(row),
            Err(_) if rows.is_empty() && i == 0 => {} // the header
            Err(e) => return Err(e).with_context(|| format!("CSV line {}: {line:?}", i + 1)),
        }
    }
    ensure!(!rows.is_empty(), "the CSV has no rows");
    let width = rows[0].len();
    ensure!(
        rows.iter().all(|r| r.len() == width),
        "CSV rows differ in length"
    );
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_with_or_without_a_header() {
        let rows = parse("a,b\n1,2\n\n3.5, -4\n").unwrap();
        assert_eq!(rows, [[1.0, 2.0], [3.5, -4.0]]);
        assert_eq!(parse("1,2\n3,4").unwrap().len(), 2);
        assert!(parse("1,2\n3").is_err());
        assert!(parse("1,2\nx,y").is_err());
        assert!(parse("a,b\n").is_err());
    }
}
