"""Tests of the StarMap dashboard: its APIs (TestClient) and the page itself in headless Chromium."""
