from libs.passport import PassportService


def save_operation_log(action, order_id):
    user_id = PassportService.current_user_id()
    print(action, order_id, user_id)
