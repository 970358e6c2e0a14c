raise RuntimeError("this agent fails at import time")
