"""Settings: action weights and environment overrides."""

import pytest

from app.factory import faust_app
from app.settings import Settings, SettingsError


def test_default_weights_are_view_half_click_one_purchase_two():
    settings = Settings()
    assert (settings.weight("view"), settings.weight("click"), settings.weight("purchase")) == (
        0.5,
        1.0,
        2.0,
    )


def test_a_return_weighs_minus_two_and_cancels_a_purchase():
    settings = Settings()
    assert settings.weight("return") == -2.0
    assert settings.weight("purchase") + settings.weight("return") == 0.0


def test_a_dislike_weighs_minus_one():
    assert Settings().weight("dislike") == -1.0


def test_an_impression_cannot_be_given_a_weight():
    settings = Settings.from_env({"RECSYS_ACTION_WEIGHTS": "view=1,impression=0.1"})
    with pytest.raises(SettingsError, match="RECSYS_ACTION_WEIGHTS: 'impression' takes no weight"):
        settings.validate()


def test_an_unknown_action_gets_the_default_weight():
    assert Settings().weight("wishlist") == 0.1


def test_weights_come_from_the_environment_without_code_changes():
    settings = Settings.from_env(
        {"RECSYS_ACTION_WEIGHTS": "view=1, purchase=5,return=-1", "RECSYS_DEFAULT_WEIGHT": "0"}
    )
    assert settings.weight("view") == 1.0
    assert settings.weight("purchase") == 5.0
    assert settings.weight("return") == -1.0
    assert settings.weight("click") == 0.0


def test_numeric_settings_are_parsed_by_their_type():
    settings = Settings.from_env({"RECSYS_PARTITIONS": "4", "RECSYS_FOLD_IN_INTERVAL": "0.1"})
    assert settings.partitions == 4
    assert settings.fold_in_interval == 0.1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RECSYS_PARTITIONS", "many", "RECSYS_PARTITIONS: expected int"),
        ("RECSYS_ACTION_WEIGHTS", "view", "expected action=weight"),
        ("RECSYS_ACTION_WEIGHTS", "view=lots", "weight of 'view' is not a number"),
    ],
)
def test_an_unusable_variable_is_named_in_the_error(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("Yes", True)])
def test_switches_read_the_usual_words_for_yes_and_no(raw, expected):
    assert Settings.from_env({"RECSYS_RUN_TRAINER": raw}).run_trainer is expected


def test_a_switch_with_another_word_is_refused():
    with pytest.raises(SettingsError, match="RECSYS_RUN_TRAINER: expected bool"):
        Settings.from_env({"RECSYS_RUN_TRAINER": "sometimes"})


def test_popularity_half_lives_start_with_the_cold_start_one_without_repeats():
    settings = Settings.from_env({"RECSYS_TRENDING_HALF_LIVES": "3600, 604800"})
    assert settings.half_lives == (604800.0, 3600.0)


def test_the_defaults_are_in_range():
    Settings().validate()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RECSYS_PARTITIONS", "0", "RECSYS_PARTITIONS: must be at least 1, got 0"),
        ("RECSYS_BATCH_EVENTS", "0", "RECSYS_BATCH_EVENTS: must be at least 1"),
        ("RECSYS_CACHE_SIZE", "-5", "RECSYS_CACHE_SIZE: must be at least 1"),
        ("RECSYS_CONTENT_WEIGHT", "1.5", r"RECSYS_CONTENT_WEIGHT: must be within \[0, 1\]"),
        ("RECSYS_EVENTS_RETENTION_MS", "-2", "RECSYS_EVENTS_RETENTION_MS: must be -1"),
        ("RECSYS_TRENDING_HALF_LIVES", "3600,soon", "RECSYS_TRENDING_HALF_LIVES: expected"),
        ("RECSYS_TRENDING_HALF_LIVES", "0", "every half-life must be positive"),
        ("RECSYS_KAFKA_BROKER", "127.0.0.1:9092", "RECSYS_KAFKA_BROKER: expected kafka://"),
        ("RECSYS_MAX_ITEMS_PER_USER", "0", "RECSYS_MAX_ITEMS_PER_USER: must be at least 1"),
        ("RECSYS_MAX_ITEMS_PER_USER", "65536", "RECSYS_MAX_ITEMS_PER_USER: must be at most 65535"),
        ("RECSYS_LOG_FORMAT", "xml", "RECSYS_LOG_FORMAT: must be one of keyvalue, json, got 'xml'"),
        ("RECSYS_POPULARITY_CLOCK", "utc", "RECSYS_POPULARITY_CLOCK: must be one of stream, wall"),
    ],
)
def test_a_value_out_of_range_is_refused_at_start_naming_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value}).validate()


def test_fausts_own_environment_variables_do_not_override_the_products_settings(monkeypatch):
    for name, value in {
        "PRODUCER_ACKS": "1",
        "WEB_PORT": "7777",
        "BROKER_URL": "kafka://elsewhere:9092",
        "BROKER_SESSION_TIMEOUT": "99",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(web_port=6123)

    conf = faust_app(settings).conf

    assert conf.producer_acks == -1, "a 202 means every in-sync replica has the event"
    assert conf.web_port == 6123
    assert [str(url) for url in conf.broker] == [settings.kafka_broker]
    assert conf.broker_session_timeout == settings.session_timeout


def test_an_env_file_sets_what_the_environment_does_not(tmp_path):
    env_file = tmp_path / "tuned.env"
    env_file.write_text("# tuned\nRECSYS_ALS_FACTORS=32\nexport RECSYS_ALS_ALPHA=10\n")

    settings = Settings.from_env({"RECSYS_ENV_FILE": str(env_file), "RECSYS_ALS_ALPHA": "2"})

    assert (settings.als_factors, settings.als_alpha) == (32, 2.0)


def test_an_env_file_naming_no_setting_is_refused_with_the_name(tmp_path):
    env_file = tmp_path / "tuned.env"
    env_file.write_text("RECSYS_ALS_FACTOR=32\n")

    with pytest.raises(SettingsError, match="RECSYS_ALS_FACTOR, which is not a setting"):
        Settings.from_env({"RECSYS_ENV_FILE": str(env_file)})


def test_a_missing_env_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="RECSYS_ENV_FILE: no such file"):
        Settings.from_env({"RECSYS_ENV_FILE": str(tmp_path / "absent.env")})


SASL_SSL = {
    "RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "RECSYS_KAFKA_USERNAME": "recsys",
    "RECSYS_KAFKA_PASSWORD": "secret",
}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"RECSYS_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "RECSYS_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
            "SASL_SSL, got 'TLS'",
        ),
        (
            {**SASL_SSL, "RECSYS_KAFKA_USERNAME": ""},
            "RECSYS_KAFKA_USERNAME: required with SASL_SSL",
        ),
        (
            {**SASL_SSL, "RECSYS_KAFKA_PASSWORD": ""},
            "RECSYS_KAFKA_PASSWORD: required with SASL_SSL",
        ),
        (
            {**SASL_SSL, "RECSYS_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "RECSYS_KAFKA_SASL_MECHANISM: must be one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN",
        ),
        (
            {"RECSYS_KAFKA_USERNAME": "recsys"},
            "RECSYS_KAFKA_USERNAME: only used with RECSYS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "
            "or SASL_SSL, got PLAINTEXT",
        ),
        (
            {"RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RECSYS_KAFKA_SSL_CAFILE": "ca"},
            "RECSYS_KAFKA_SSL_CAFILE: only used with RECSYS_KAFKA_SECURITY_PROTOCOL=SSL or "
            "SASL_SSL, got SASL_PLAINTEXT",
        ),
        (
            {"RECSYS_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSYS_KAFKA_SSL_CAFILE": "/no/ca.pem"},
            "RECSYS_KAFKA_SSL_CAFILE: no such file '/no/ca.pem'",
        ),
        (
            {"RECSYS_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSYS_KAFKA_SSL_KEYFILE": "client.key"},
            "RECSYS_KAFKA_SSL_KEYFILE: the key of a client certificate, which "
            "RECSYS_KAFKA_SSL_CERTFILE does not name",
        ),
        (
            {"RECSYS_TOPIC_REPLICATION_FACTOR": "0"},
            "RECSYS_TOPIC_REPLICATION_FACTOR: must be at least 1",
        ),
        (
            {"RECSYS_TOPIC_REPLICATION_FACTOR": "3", "RECSYS_TOPIC_MIN_INSYNC_REPLICAS": "4"},
            r"RECSYS_TOPIC_MIN_INSYNC_REPLICAS: must be at most RECSYS_TOPIC_REPLICATION_FACTOR "
            r"\(3\), got 4",
        ),
    ],
)
def test_a_kafka_setting_that_cannot_connect_or_would_be_ignored_is_refused_naming_it(
    variables, message
):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(variables).validate()


def test_sasl_over_tls_with_the_systems_cas_is_accepted():
    Settings.from_env(SASL_SSL).validate()


def test_the_kafka_password_is_not_in_the_settings_repr():
    assert "secret" not in repr(Settings.from_env(SASL_SSL))
