//! Text held to a width in terminal columns (not bytes or chars: CJK takes two): cut with `…`,
//! spans fitted, prose wrapped. Control characters are shown as `?`, since a client.id is the
//! client's to choose and an escape sequence would move the cursor.
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// How a name too wide for its column is cut: most keep their start; thread names differ at
/// their end (`...-network-thread-1-PLAINTEXT-0`), so they keep both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    End,
    Middle,
}

/// Control characters (a client.id is the client's to choose) would move the cursor: shown as `?`.
pub(super) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `text` in at most `width` columns, `…` where it was cut.
pub(super) fn cut(text: &str, width: usize, how: Cut) -> String {
    let text = printable(text);
    if text.width() <= width {
        return text;
    }
    if width == 0 {
        return String::new();
    }
    let take = |chars: &mut dyn Iterator<Item = char>, room: usize| {
        let mut used = 0;
        chars
            .take_while(|c| {
                used += c.width().unwrap_or(0);
                used <= room
            })
            .collect::<String>()
    };
    let room = width - 1;
    match how {
        Cut::End => take(&mut text.chars(), room) + "…",
        Cut::Middle => {
            let head = take(&mut text.chars(), room / 2);
            let tail: String = take(&mut text.chars().rev(), room - room / 2).chars().rev().collect();
            format!("{head}…{tail}")
        }
    }
}

/// Spans cut to `width` columns: a line that never wraps.
pub(super) fn fit(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let mut room = width;
    let mut out = Vec::new();
    for span in spans {
        let text = printable(&span.content);
        if text.width() <= room {
            room -= text.width();
            out.push(Span::styled(text, span.style));
        } else {
            out.push(Span::styled(cut(&text, room, Cut::End), span.style));
            break;
        }
    }
    Line::from(out)
}

/// Prose in lines of at most `width` columns, broken at spaces (a word longer than a line is
/// cut into pieces).
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in printable(text).split_whitespace() {
        let mut word = word.to_string();
        while word.width() > width {
            // Where the first character past the line starts (the first character whatever
            // its width, so that the loop moves on).
            let mut used = 0;
            let at = word.char_indices().find(|&(_, c)| {
                used += c.width().unwrap_or(0);
                used > width
            });
            let at = at.map_or(word.len(), |(i, _)| i).max(word.chars().next().map_or(0, char::len_utf8));
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word[..at].to_string());
            word = word[at..].to_string();
        }
        if !line.is_empty() && line.width() + 1 + word.width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += &word;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::tui::fixture::THREAD;

    #[test]
    fn names_are_cut_with_an_ellipsis() {
        assert_eq!(cut(THREAD, 12, Cut::Middle), "data-…TEXT-0");
        assert_eq!(cut("analytics-backfill", 12, Cut::End), "analytics-b…");
        assert_eq!(cut("short", 12, Cut::End), "short");
        assert_eq!(cut("日本語のクライアント", 7, Cut::End), "日本語…");
        assert_eq!(cut("evil\x1b[2Jid", 20, Cut::End), "evil?[2Jid");
        for line in wrap(&format!("{} {THREAD} end", "word ".repeat(30)), 20) {
            assert!(line.width() <= 20, "{line}");
        }
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(wrap("日本", 1), ["日", "本"]);
    }
}
