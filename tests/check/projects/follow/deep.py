import threading

from flask import request


def level1():
    level2()


def level2():
    level3()


def level3():
    level4()


def level4():
    level5()


def level5():
    level6()


def level6():
    level7()


def level7():
    level8()


def level8():
    level9()


def level9():
    level10()


def level10():
    level11()


def level11():
    return request.data  # expect: OFF101


def start():
    threading.Thread(target=level1).start()
