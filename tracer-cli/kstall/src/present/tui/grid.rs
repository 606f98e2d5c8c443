//! An evidence table laid out for the screen: the columns that fit the width, chosen by
//! priority (names shrink first, down to NAME_MIN, then whole columns drop), rows styled and
//! sorted by key.
use ratatui::{
    style::{Color, Modifier, Style},
    text::{Line, Span},
};
use unicode_width::UnicodeWidthStr;

use super::{
    columns::specs,
    text::{Cut, cut, fit},
};
use crate::present::table::{Col, MeasurementTable};

/// A column of a view's table: kept in order of priority (0 first) when the screen is narrow.
/// A name column (`cut`) first shrinks, down to NAME_MIN; any other is shown whole or not at
/// all.
pub(super) struct Spec {
    pub(super) col: Col,
    pub(super) priority: u8,
    pub(super) cut: Option<Cut>,
}

pub(super) const NAME_MIN: usize = 12;

pub(super) const fn col(col: Col, priority: u8) -> Spec {
    Spec { col, priority, cut: None }
}

pub(super) const fn name(col: Col, priority: u8, cut: Cut) -> Spec {
    Spec { col, priority, cut: Some(cut) }
}

/// Priority of a column no spec names: after every named one.
pub(super) const UNLISTED: u8 = u8::MAX;

pub(super) struct Column {
    pub(super) title: String,
    pub(super) priority: u8,
    pub(super) cut: Option<Cut>,
    pub(super) right: bool,
}

pub(super) struct GridRow {
    pub(super) cells: Vec<String>,
    pub(super) style: Style,
    /// One sort key per order after the summary's own (the view's `sorts()[1..]`).
    pub(super) keys: Vec<u64>,
}

/// An evidence table laid out for the screen.
pub(super) struct Grid {
    pub(super) title: Option<&'static str>,
    pub(super) columns: Vec<Column>,
    pub(super) rows: Vec<GridRow>,
}

impl Grid {
    /// The table's columns with its [`specs`], by column.
    pub(super) fn new(t: MeasurementTable, titled: bool) -> Grid {
        let specs = specs(t.kind);
        let columns = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, &col)| {
                let spec = specs.iter().find(|s| s.col == col);
                Column { title: col.header().to_string(), priority: spec.map_or(UNLISTED, |s| s.priority), cut: spec.and_then(|s| s.cut), right: i >= t.numeric_from }
            })
            .collect();
        let rows = t.rows.into_iter().map(|cells| GridRow { cells, style: Style::new(), keys: Vec::new() }).collect();
        Grid { title: titled.then_some(t.title), columns, rows }
    }

    pub(super) fn styled(mut self, styles: impl IntoIterator<Item = Style>) -> Grid {
        for (row, style) in self.rows.iter_mut().zip(styles) {
            row.style = style;
        }
        self
    }

    pub(super) fn keyed(mut self, keys: impl IntoIterator<Item = Vec<u64>>) -> Grid {
        for (row, keys) in self.rows.iter_mut().zip(keys) {
            row.keys = keys;
        }
        self
    }

    /// Which columns fit in `width`, and how wide each is, in table order.
    pub(super) fn layout(&self, width: usize) -> Vec<(usize, usize)> {
        let natural: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.rows.iter().map(|r| r.cells[i].width()).chain([c.title.width()]).max().unwrap_or(0))
            .collect();
        let least = |i: usize| if self.columns[i].cut.is_some() { natural[i].min(NAME_MIN) } else { natural[i] };
        let mut by_priority: Vec<usize> = (0..self.columns.len()).collect();
        by_priority.sort_by_key(|&i| self.columns[i].priority);
        let mut widths: Vec<Option<usize>> = vec![None; self.columns.len()];
        let mut used = 0;
        for &i in &by_priority {
            // One space between columns.
            let need = least(i) + usize::from(used > 0);
            if used + need <= width {
                widths[i] = Some(least(i));
                used += need;
            }
        }
        // The room left widens the names kept, the most important first.
        for &i in &by_priority {
            if let Some(w) = widths[i].as_mut().filter(|_| self.columns[i].cut.is_some()) {
                let more = (natural[i] - *w).min(width - used);
                *w += more;
                used += more;
            }
        }
        widths.into_iter().enumerate().filter_map(|(i, w)| w.map(|w| (i, w))).collect()
    }

    /// Title, header and rows, each line at most `width`; rows in order `sort` (0: as given,
    /// else largest first by key `sort - 1`).
    pub(super) fn lines(mut self, width: usize, sort: usize) -> Vec<Line<'static>> {
        if let Some(key) = sort.checked_sub(1) {
            self.rows.sort_by_key(|r| std::cmp::Reverse(r.keys.get(key).copied().unwrap_or(0)));
        }
        let layout = self.layout(width);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut out = Vec::new();
        if let Some(title) = self.title {
            out.push(fit(vec![Span::styled(title, bold)], width));
        }
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.clone()).collect();
        out.push(self.line(&titles, &layout, bold.add_modifier(Modifier::UNDERLINED)));
        if self.rows.is_empty() {
            out.push(fit(vec![Span::styled("none yet", Style::new().fg(Color::Gray))], width));
        }
        for row in &self.rows {
            out.push(self.line(&row.cells, &layout, row.style));
        }
        out
    }

    pub(super) fn line(&self, cells: &[String], layout: &[(usize, usize)], style: Style) -> Line<'static> {
        let mut text = String::new();
        for (k, &(i, w)) in layout.iter().enumerate() {
            if k > 0 {
                text.push(' ');
            }
            let column = &self.columns[i];
            let cell = cut(&cells[i], w, column.cut.unwrap_or(Cut::End));
            let pad = " ".repeat(w - cell.width());
            if column.right {
                text += &pad;
                text += &cell;
            } else {
                text += &cell;
                text += &pad;
            }
        }
        Line::from(Span::styled(text, style))
    }
}
