//! Times as people read them, for `ls` listings, `inspect` and OCI `created` fields.

/// Now as RFC 3339 with nanoseconds (`2026-12-04T09:51:54.479945402Z`), as runc writes
/// `created`.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = format_utc(d.as_secs() as i64);
    format!(
        "{}.{:09}Z",
        secs.trim_end_matches('Z').replace(' ', "T"),
        d.subsec_nanos()
    )
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC), by Howard Hinnant's civil date
/// algorithm.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
