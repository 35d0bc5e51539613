# Sentences of the access pages.
# Предложения страниц части access.

## Страница ролей
access-roles-title = Права доступа
access-roles-lead = Роли определяют, кто может видеть и изменять почтовые ящики компании, приглашать сотрудников и настраивать эти права. Каждое право на ящики действует в пределах своего охвата: никаких ящиков, только свои, свои и подчинённых, свой отдел и вложенные отделы или все.
access-read-mail-note = Ни одна роль не даёт читать почту: её читают только владелец ящика и те, кому он открыл доступ, — даже администраторы и руководители не читают.
access-mine-title = Ваши роли
access-read-only = Роли меняют только администраторы и сотрудники, чья роль позволяет настраивать права доступа. Вы видите их как есть.
access-matrix-caption = Роли и что они разрешают: докуда действует каждое право на ящики и может ли роль приглашать сотрудников и настраивать права доступа
access-col-role = Роль
access-col-view = Видеть в списке
access-col-connect = Подключать
access-col-modify = Изменять
access-col-read = Открывать чтение
access-col-invite = Приглашать
access-col-manage = Настраивать
access-rel-assignee = назначена: { $name }
access-grant-view = Видеть ящики в списке
access-grant-connect = Подключать ящики
access-grant-modify = Изменять настройки ящиков
access-grant-read = Открывать доступ к чтению
access-grant-invite = Приглашать сотрудников
access-grant-manage = Настраивать права доступа
access-scope-none = Нет
access-scope-own = Свои
access-scope-subordinates = Подчинённых
access-scope-department = Отдела
access-scope-all = Все
access-kind-administrator = Встроенная
access-kind-default = Стандартная
access-kind-custom = Своя
access-holders-administrator = Все администраторы организации
access-holders-supervisor = По умолчанию: руководители отделов
access-holders-manager = По умолчанию: все остальные
access-hidden = Скрыта
access-hidden-note = Скрытая роль продолжает действовать, её просто нет в обычных списках.
access-assignment-count = { $count ->
    [one] { $count } назначение
    [few] { $count } назначения
   *[many] { $count } назначений
}
access-save-role = Сохранить «{ $name }»
access-fixed = Не меняется
access-conflict = Пока вы редактировали, роль изменил кто-то другой; вот её текущий вид. Внесите изменения ещё раз и сохраните.
access-conflict-delete = Пока вы решали, роль изменил кто-то другой. Посмотрите на неё ещё раз, прежде чем удалять.
access-create-title = Новая роль
access-role-name = Название роли
access-create-hint = Новая роль ничего не разрешает, пока вы не выберете её права.
access-create = Создать роль
access-explain-link = Почему сотрудник видит ящик? Спросить.
access-bad-form = Эта форма заполнена не на этой странице. Обновите страницу и попробуйте ещё раз.

## Одна роль
access-back-to-roles = Все роли
access-administrator-fixed = Роль «Администратор» разрешает всё и есть ровно у администраторов организации; сделать сотрудника администратором можно на его странице.
access-grants-title = Что разрешает роль
access-org-grants = В организации
access-scope-hint = Свои — собственные ящики. Подчинённых — ещё и ящики всех, кем сотрудник руководит. Отдела — ещё и ящики всех в его отделах и вложенных отделах. Все — любые ящики.
access-assignments-title = У кого есть роль
access-assignments-hint = Сотрудник, у которого есть своя роль, роль его отдела или роль руководителей, больше не получает роли «всех остальных».
access-no-assignments = Эта роль пока ни у кого нет.
access-col-assigned-to = Кому назначена
access-assignments-pages = Страницы назначений
access-unassign = Снять с { $name }
access-assign-title = Назначить роль
access-assign-person = Назначить сотруднику
access-person-email = Адрес почты сотрудника
access-assign-department = Назначить отделу
access-department = Отдел
access-with-sub = Вместе с вложенными отделами
access-assign-heads = Назначить всем руководителям отделов
access-assign-everyone-else = Назначить всем остальным
access-to-person = { $name }
access-to-members = Сотрудники отдела «{ $name }»
access-to-tree = Отдел «{ $name }» и вложенные отделы
access-to-heads = Все руководители отделов
access-to-everyone-else = Все остальные (у кого нет другой роли)
access-person-unknown = В вашей организации нет сотрудника с адресом «{ $name }».
access-department-needed = Выберите отдел.
access-more-title = Ещё
access-clone = Скопировать роль
access-clone-name = Название копии
access-clone-placeholder = { $name } (копия)
access-hide = Скрыть роль
access-show = Показывать роль
access-delete = Удалить роль

## Удаление роли
access-delete-title = Удалить роль «{ $name }»?
access-delete-lead = { $count ->
    [one] Она назначена { $count } сотруднику, отделу или группе — они её потеряют.
    [few] Она назначена { $count } сотрудникам, отделам или группам — все они её потеряют.
   *[many] Она назначена { $count } сотрудникам, отделам или группам — все они её потеряют.
}
access-delete-confirm = Удалить роль

## Кто читает ящик
access-readers-title = Кто читает { $email }
access-back-to-mailboxes = Почтовые ящики
access-readers-owner = Владелец: { $name }
access-readers-caption = Кто может читать почту этого ящика
access-readers-unnamed = { $count ->
    [one] Имена показаны для первых 200 сотрудников; ещё { $count } показан по идентификатору.
    [few] Имена показаны для первых 200 сотрудников; ещё { $count } показаны по идентификаторам.
   *[many] Имена показаны для первых 200 сотрудников; ещё { $count } показаны по идентификаторам.
}
access-col-person = Сотрудник
access-col-why = Почему
access-reader-owner = Владелец
access-reader-granted = Открыт доступ к чтению
access-reader-remove = Закрыть доступ для { $name }
access-why-link = Почему { $name } может читать?
access-reader-add-title = Открыть доступ к чтению
access-reader-add = Открыть доступ
access-reader-no-grant = Вы не можете открыть доступ к этому ящику: ваши роли этого не разрешают.

## Почему сотрудник это видит?
access-explain-title = Почему сотрудник это видит?
access-explain-lead = Выберите сотрудника и действие — Mailroom ответит, разрешено ли оно и почему.
access-permission = Действие
access-explain-mailbox = Ящик (адрес или идентификатор)
access-explain-mailbox-hint = Оставьте пустым для прав в организации (приглашать, настраивать доступ, регистрировать пользователей).
access-explain-submit = Объяснить
access-explain-mailbox-needed = Это право относится к ящику: укажите его адрес или идентификатор.
access-mailbox-unknown = Среди доступных вам ящиков нет ящика с адресом «{ $name }».
access-explain-yes = Да: { $name } может { $what } ({ $target }).
access-explain-no = Нет: { $name } не может { $what } ({ $target }).
access-explain-reason = Причина:
access-explain-path = Как:
access-explain-role = Роль
access-explain-scope = Её охват
access-explain-assignment = Кому назначена
access-explain-denied-hint = Чтобы это изменить, назначьте сотруднику роль, которая это разрешает, или (для чтения почты) откройте ему доступ к ящику.
access-perm-view = видеть ящик в списке
access-perm-read-mail = читать его почту
access-perm-modify = изменять его настройки
access-perm-sync = синхронизировать его сейчас
access-perm-connect = подключать ящики для его владельца
access-perm-grant-read = открывать и закрывать доступ к нему
access-perm-invite = приглашать сотрудников
access-perm-manage = настраивать права доступа
access-perm-register = регистрировать пользователей
access-node-department = отдел «{ $name }»
access-node-mailbox = ящик { $name }
access-node-role = роль «{ $name }»
access-node-org = организация
access-rel-owner = владелец { $name }
access-rel-reader = доступ к чтению у { $name }
access-rel-member = сотрудник отдела «{ $name }»
access-rel-head = руководитель { $name }
access-rel-parent = входит в отдел «{ $name }»
access-rel-admin = администратор { $name }
access-rel-everyone-invites = приглашать могут все

## Уведомления
notice-access-created = Роль создана. Выберите, что она разрешает и кому её назначить.
notice-access-saved = Роль сохранена.
notice-access-unchanged = Ничего не изменилось.
notice-access-cloned = Копия создана; она пока ни у кого нет.
notice-access-deleted = Роль удалена.
notice-access-assigned = Роль назначена.
notice-access-unassigned = Роль снята.
notice-access-reader-added = Доступ к чтению открыт.
notice-access-reader-removed = Доступ к чтению закрыт.
