"""The engine: pure decisions about runs. No Kubernetes client, no asyncio, no clock."""
