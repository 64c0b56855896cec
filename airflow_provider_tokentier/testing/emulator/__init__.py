"""A faithful local emulator of the Anthropic and OpenAI batch, flex and standard endpoints."""
