"""An echo bot: answers chat messages in the lobby, then leaves after --count of them.

    python docs/examples/echo_bot.py ws://127.0.0.1:4500/ [COUNT]
"""
import sys

from symple_tx.client import SympleClient, run


async def main(reactor, url="ws://127.0.0.1:4500/", count="1"):
    bot = SympleClient(url, "echo", name="Echo bot", rooms=["lobby"])
    bot.add_capability("echo")
    bot.on("add_peer", lambda peer: print("online:", peer["user"], flush=True))
    await bot.connect()
    print("ready as", bot.address, "in", bot.rooms, flush=True)
    for _ in range(int(count)):
        frame = await bot.next_message({"subtype": "chat"})
        bot.respond(frame, data={"text": "echo: " + frame["data"]["text"]})
    await bot.sync()  # the answers are out
    await bot.disconnect()


if __name__ == "__main__":
    run(main, *sys.argv[1:])
