# Runs first on every reset and soft reset, before main.py (also in the raw REPL the host
# tools use), so it does one harmless thing: keep the vendor debug log off the REPL UART.
try:
    import esp  # pyright: ignore[reportMissingImports]  (Espressif boards only)

    esp.osdebug(None)
except ImportError:  # not an Espressif board
    pass
