//! Line charts as standalone SVG: what a reader would rather look at than
//! a table.

/// One line of a chart.
pub(crate) struct Series<'a> {
    pub name: String,
    pub colour: &'a str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// The x axis: evenly spaced categories (client counts), a linear scale
/// from zero (seconds), or a linear scale over the data's own span (a
/// latency distribution, where zero would squeeze every point to the
/// right), with its label.
pub(crate) enum Axis<'a> {
    Categories(&'a str),
    Linear(&'a str),
    Span(&'a str),
}

/// A line chart with a linear y axis from zero.
pub(crate) fn line_chart(title: &str, axis: Axis, series: &[Series]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 40.0;
    const RIGHT: f64 = 150.0;
    let mut xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let max_x = xs.last().copied().unwrap_or(0.0).max(1e-9);
    let min_x = match axis {
        Axis::Span(_) => xs.first().copied().unwrap_or(0.0).min(max_x - 1e-9),
        _ => 0.0,
    };
    let max_y = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0_f64, f64::max).max(1e-9) * 1.1;
    let width = W - LEFT - RIGHT;
    let x_of = |x: f64| match axis {
        Axis::Categories(_) => {
            let i = xs.iter().position(|v| *v == x).unwrap_or(0) as f64;
            LEFT + i * width / (xs.len().max(2) - 1) as f64
        }
        Axis::Linear(_) | Axis::Span(_) => LEFT + (x - min_x) / (max_x - min_x) * width,
    };
    let y_of = |v: f64| H - BOTTOM - v / max_y * (H - BOTTOM - TOP);
    let number = |v: f64| if v >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.1}") };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>\n",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    let (ticks, label): (Vec<f64>, &str) = match axis {
        Axis::Categories(label) => (xs.clone(), label),
        Axis::Linear(label) | Axis::Span(label) => ((0..=5).map(|i| min_x + (max_x - min_x) * f64::from(i) / 5.0).collect(), label),
    };
    for x in ticks {
        svg += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x_of(x), H - BOTTOM + 16.0, number(x));
    }
    svg += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n", (LEFT + W - RIGHT) / 2.0, H - 6.0);
    for i in 0..=4 {
        let v = max_y / 1.1 * f64::from(i) / 4.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            LEFT - 6.0,
            y_of(v) + 4.0,
            number(v),
            y_of(v),
            W - RIGHT,
            y_of(v)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let dash = if s.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        let path: Vec<String> = s.points.iter().map(|(x, v)| format!("{:.1},{:.1}", x_of(*x), y_of(*v))).collect();
        svg += &format!("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n", s.colour, path.join(" "));
        let ly = TOP + 18.0 * i as f64;
        svg += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>\n",
            W - RIGHT + 10.0,
            W - RIGHT + 40.0,
            s.colour,
            W - RIGHT + 46.0,
            ly + 4.0,
            s.name
        );
    }
    svg + "</svg>\n"
}
