"""The topics the product and Faust create: each with the configured replication factor and
``min.insync.replicas`` (the integration test reads them back from a broker)."""

from __future__ import annotations

from app.factory import faust_app
from app.settings import Settings
from app.tables import user_state_table
from app.topics import Topics


def test_fausts_topics_get_the_configured_replication_factor():
    settings = Settings(topic_replication_factor=3, topic_min_insync_replicas=2)
    assert faust_app(settings).conf.topic_replication_factor == 3


def test_the_products_topics_and_the_changelog_get_the_configured_min_insync_replicas():
    settings = Settings(topic_replication_factor=3, topic_min_insync_replicas=2, store="memory://")
    app = faust_app(settings)
    topics = Topics.declare(app, settings)
    changelog = user_state_table(app, settings).changelog_topic
    configs = {topic.get_topic_name(): topic.config for topic in (*topics.all, changelog)}
    assert {name: config["min.insync.replicas"] for name, config in configs.items()} == {
        "user-actions": "2",
        "user-actions-dlq": "2",
        "items": "2",
        "recommender-user-state-changelog": "2",
    }
    assert configs["user-actions"]["retention.ms"] == "-1"
