use super::*;

#[test]
fn cursors_parse_with_and_without_offset() {
    let z = parse_cursor("2024-11-04T11:16:00.123Z").unwrap();
    assert_eq!(z.as_millisecond(), 1_730_718_960_123);
    assert_eq!(parse_cursor("2024-11-04T11:16:00.123"), Some(z));
    assert_eq!(parse_cursor("2024-11-04T12:16:00.123+01:00"), Some(z));
    assert_eq!(parse_cursor("not a date"), None);
}

#[test]
fn batch_sizes_parse_as_number_does() {
    assert_eq!(parse_batch_size("2500"), Some(2500));
    assert_eq!(parse_batch_size("2500.0"), Some(2500));
    assert_eq!(parse_batch_size(" 1000 "), Some(1000));
    assert_eq!(parse_batch_size("25.5"), None);
    assert_eq!(parse_batch_size("lots"), None);
}

#[test]
fn iso_is_millisecond_javascript_form() {
    let t = Timestamp::from_nanosecond(1_730_718_960_123_456_789).unwrap();
    assert_eq!(iso_millis(t), "2024-11-04T11:16:00.123Z");
    let whole = Timestamp::from_second(1_730_718_960).unwrap();
    assert_eq!(iso_millis(whole), "2024-11-04T11:16:00.000Z");
}

#[test]
fn millis_floor_rounds_down() {
    let t = Timestamp::from_nanosecond(1_999_999).unwrap();
    assert_eq!(millis_floor(t), 1);
}

#[test]
fn copy_rows_map_to_tables() {
    assert_eq!(
        copied_table("migrateObservationsFromPostgresToClickhouse", "x"),
        Some(Table::Observations)
    );
    assert_eq!(
        copied_table("custom", "20241024_1738_migrate_scores_from_pg_to_ch"),
        Some(Table::Scores)
    );
    assert_eq!(
        copied_table(
            "addGenerationsCostBackfill",
            "20241024_1216_add_generations_cost_backfill"
        ),
        None
    );
}
