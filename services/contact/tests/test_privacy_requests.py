

def test_holidays_come_from_one_comma_separated_setting() -> None:
    settings = Settings(privacy_holidays="2026-12-07, 2026-12-08")  # type: ignore[arg-type]
    assert settings.holidays == {date(2026, 12, 7), date(2026, 12, 8)}
    friday_noon = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)
    assert privacy.deadlines(friday_noon, settings).ack_due_at == datetime(2026, 12, 10, 5, 0, tzinfo=UTC)
    assert Settings(privacy_holidays="").holidays == frozenset()  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(privacy_holidays="2026-13-01")  # type: ignore[arg-type]
