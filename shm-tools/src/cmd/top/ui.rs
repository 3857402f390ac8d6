//! The screens of `shmq top` (ratatui) and its keys. Everything fits an
//! 80×24 terminal: the topic list, a rate sparkline of the selected topic,
//! and one line of key help; a drilled-in topic shows its partitions and
//! groups instead of the list.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::model::{Model, TopicRow};

/// Sort order of the topic list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// By namespace, then topic name.
    Name,
    /// Busiest (messages in per second) first.
    In,
    /// Largest group lag first.
    Lag,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Name => Sort::In,
            Sort::In => Sort::Lag,
            Sort::Lag => Sort::Name,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::In => "in/s",
            Sort::Lag => "lag",
        }
    }
}

/// State of the interactive view.
pub struct App {
    /// The figures.
    pub model: Model,
    /// Index into the visible rows.
    pub selected: usize,
    /// Sort order.
    pub sort: Sort,
    /// Substring that `namespace/topic` must contain.
    pub filter: String,
    /// Typing a filter (after `/`).
    pub editing: bool,
    /// The drilled-in topic (`namespace/topic`).
    pub detail: Option<String>,
    /// The user asked to quit.
    pub quit: bool,
    /// The last snapshot failed with this.
    pub error: Option<String>,
}

impl App {
    /// A fresh view over `model`.
    pub fn new(model: Model) -> App {
        App {
            model,
            selected: 0,
            sort: Sort::In,
            filter: String::new(),
            editing: false,
            detail: None,
            quit: false,
            error: None,
        }
    }

    /// The rows shown: filtered, then sorted.
    pub fn visible(&self) -> Vec<&TopicRow> {
        let f = self.filter.to_lowercase();
        let mut rows: Vec<&TopicRow> = self
            .model
            .rows
            .iter()
            .filter(|r| f.is_empty() || r.key().to_lowercase().contains(&f))
            .collect();
        match self.sort {
            Sort::Name => {}
            Sort::In => rows.sort_by(|a, b| b.in_rate.total_cmp(&a.in_rate)),
            Sort::Lag => rows.sort_by_key(|r| std::cmp::Reverse(r.max_lag)),
        }
        rows
    }

    fn selected_row(&self) -> Option<&TopicRow> {
        match &self.detail {
            Some(k) => self.model.rows.iter().find(|r| &r.key() == k),
            None => self.visible().get(self.selected).copied(),
        }
    }

    /// Handle one key.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind != KeyEventKind::Press {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return;
        }
        let n = self.visible().len();
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h')
                if self.detail.is_some() =>
            {
                self.detail = None;
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Down | KeyCode::Char('j') if n > 0 => {
                self.selected = (self.selected + 1).min(n - 1);
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = n.saturating_sub(1),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                self.detail = self.visible().get(self.selected).map(|r| r.key());
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => {
                self.editing = true;
                self.detail = None;
            }
            _ => {}
        }
        self.selected = self.selected.min(self.visible().len().saturating_sub(1));
    }

    /// Draw the current screen.
    pub fn draw(&self, f: &mut Frame) {
        let [head, body, spark, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(5),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let title = match (&self.error, &self.detail) {
            (Some(e), _) => format!("shmq top: snapshot failed: {e}"),
            (None, Some(k)) => format!("shmq top: {k}"),
            (None, None) => {
                let shown = self.visible().len();
                let mut t = format!(
                    "shmq top: {shown} of {} topics in {} | sort {}",
                    self.model.rows.len(),
                    namespaces_label(&self.model.namespaces),
                    self.sort.label()
                );
                if self.editing || !self.filter.is_empty() {
                    t.push_str(&format!(
                        " | filter: {}{}",
                        self.filter,
                        if self.editing { "_" } else { "" }
                    ));
                }
                t
            }
        };
        f.render_widget(
            Paragraph::new(title).style(Style::new().add_modifier(Modifier::BOLD)),
            head,
        );
        match self.selected_row().filter(|_| self.detail.is_some()) {
            Some(row) => draw_detail(f, body, row),
            None => self.draw_list(f, body),
        }
        draw_sparkline(f, spark, self.selected_row());
        let help = if self.editing {
            "type to filter namespace/topic | enter done | esc clear"
        } else if self.detail.is_some() {
            "q quit | esc back | ctrl-c quit"
        } else {
            "q quit | up/down select | enter details | s sort | / filter"
        };
        f.render_widget(
            Paragraph::new(help).style(Style::new().add_modifier(Modifier::REVERSED)),
            foot,
        );
    }

    fn draw_list(&self, f: &mut Frame, area: Rect) {
        let rows: Vec<Row> = self
            .visible()
            .into_iter()
            .map(|r| {
                let name = if r.state == "ok" {
                    r.key()
                } else {
                    format!("{} ({})", r.key(), r.state)
                };
                Row::new(vec![
                    Cell::from(name),
                    Cell::from(fmt_rate(r.in_rate)),
                    Cell::from(fmt_rate(r.out_rate)),
                    Cell::from(fmt_count(r.max_lag)),
                    Cell::from(writers(r)),
                    Cell::from(fmt_left_ms(r.lease_left_ms)),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Min(20),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(6),
            ],
        )
        .header(
            Row::new(["TOPIC", "IN/s", "OUT/s", "MAX LAG", "WRITERS", "LEASE"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(Some(self.selected));
        f.render_stateful_widget(table, area, &mut state);
    }
}

fn draw_detail(f: &mut Frame, area: Rect, row: &TopicRow) {
    let parts_h = (row.parts.len() as u16 + 3).min(area.height / 2).max(4);
    let [summary, parts, groups] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(parts_h),
        Constraint::Min(3),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(Line::from(format!(
            "{} msgs | in {}/s | out {}/s | writers {} | lease {}{}",
            fmt_count(row.messages),
            fmt_rate(row.in_rate),
            fmt_rate(row.out_rate),
            writers(row),
            fmt_left_ms(row.lease_left_ms),
            row.error
                .as_ref()
                .map(|e| format!(" | {e}"))
                .unwrap_or_default()
        ))),
        summary,
    );
    let prow: Vec<Row> = row
        .parts
        .iter()
        .map(|p| {
            let writer = match (p.writer_alive, p.writer_pid) {
                (None, _) => "-".to_string(),
                (Some(alive), pid) => format!(
                    "pid {} e{} {}",
                    pid.map_or_else(|| "?".into(), |p| p.to_string()),
                    p.writer_epoch,
                    if alive { "alive" } else { "dead" }
                ),
            };
            Row::new(vec![
                p.partition.to_string(),
                fmt_count(p.write_offset),
                fmt_rate(p.in_rate),
                fmt_count(p.depth),
                writer,
                fmt_left_ms(p.lease_left_ms),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            prow,
            [
                Constraint::Length(4),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Min(18),
                Constraint::Length(6),
            ],
        )
        .header(
            Row::new(["P", "OFFSET", "IN/s", "DEPTH", "WRITER", "LEASE"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title("partitions")),
        parts,
    );
    let grows: Vec<Row> = row
        .groups
        .iter()
        .map(|g| {
            let by_part: Vec<String> = g.partition_lag.iter().map(|l| fmt_count(*l)).collect();
            Row::new(vec![
                g.name.clone(),
                format!("{}/{}", g.live_members, g.members),
                fmt_count(g.lag),
                fmt_rate(g.out_rate),
                by_part.join(" "),
            ])
        })
        .collect();
    let title = if row.groups.is_empty() {
        "groups: none"
    } else {
        "groups"
    };
    f.render_widget(
        Table::new(
            grows,
            [
                Constraint::Length(16),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(["GROUP", "LIVE/ALL", "LAG", "OUT/s", "LAG BY PARTITION"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(title)),
        groups,
    );
}

fn draw_sparkline(f: &mut Frame, area: Rect, row: Option<&TopicRow>) {
    let Some(row) = row else {
        f.render_widget(
            Paragraph::new("no topic selected").block(Block::bordered().title("in/s")),
            area,
        );
        return;
    };
    let width = area.width.saturating_sub(2) as usize;
    let data: &[u64] = &row.history[row.history.len().saturating_sub(width)..];
    let max = data.iter().copied().max().unwrap_or(0);
    let title = format!(
        "in/s of {}: now {}, max {} (last {} s)",
        row.key(),
        fmt_rate(row.in_rate),
        fmt_count(max),
        data.len()
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(data),
        area,
    );
}

fn namespaces_label(ns: &[String]) -> String {
    match ns {
        [one] => format!("namespace {one}"),
        many => format!("{} namespaces", many.len()),
    }
}

fn writers(r: &TopicRow) -> String {
    let total = r.writers_live + r.writers_dead + r.writers_none;
    if r.writers_dead > 0 {
        format!("{}/{} {}!", r.writers_live, total, r.writers_dead)
    } else {
        format!("{}/{}", r.writers_live, total)
    }
}

/// A rate for a narrow column: `0`, `950`, `12.3k`, `4.5M`.
pub fn fmt_rate(x: f64) -> String {
    if x < 1.0 && x > 0.0 {
        format!("{x:.1}")
    } else {
        fmt_count(x.round() as u64)
    }
}

/// A count for a narrow column.
pub fn fmt_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// Lease time left for a narrow column.
pub fn fmt_left_ms(ms: Option<u64>) -> String {
    match ms {
        None => "gone".into(),
        Some(0) => "expd".into(),
        Some(ms) if ms < 60_000 => format!("{}s", ms / 1000),
        Some(ms) if ms < 3_600_000 => format!("{}m", ms / 60_000),
        Some(ms) => format!("{}h", ms / 3_600_000),
    }
}
