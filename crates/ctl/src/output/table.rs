//! The ASCII tables etcdctl draws with `olekukonko/tablewriter` (headers upper-cased
//! and centred, cells right-aligned, `+---+` borders).

/// Renders a table as etcdctl's `-w table` does.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let border: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s
    };
    let mut out = String::new();
    out.push_str(&border);
    out.push('\n');
    out.push('|');
    for (h, w) in head.iter().zip(&widths) {
        let gap = w - h.chars().count();
        let left = gap / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(gap - left)
        ));
    }
    out.push('\n');
    out.push_str(&border);
    out.push('\n');
    for row in rows {
        out.push('|');
        for (c, w) in row.iter().zip(&widths) {
            out.push_str(&format!(" {c:>w$} |"));
        }
        out.push('\n');
    }
    out.push_str(&border);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_like_tablewriter() {
        let t = super::render(
            &["ID", "Status", "Name"],
            &[vec![
                "8e9e05c52164694d".into(),
                "started".into(),
                "t".into(),
            ]],
        );
        assert_eq!(
            t,
            "+------------------+---------+------+\n\
             |        ID        | STATUS  | NAME |\n\
             +------------------+---------+------+\n\
             | 8e9e05c52164694d | started |    t |\n\
             +------------------+---------+------+\n"
        );
    }
}
