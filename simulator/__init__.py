"""The at-least-once publisher and load driver."""
